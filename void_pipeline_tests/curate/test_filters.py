"""The filters: loop detector both ways, normalisation, duplicates, accounting, and recall on ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from void_pipeline.lib.curate.filters import FilterOptions, LoopDetector, filter_records, normalise_text
from void_pipeline.lib.ingest.records import RAW_SCHEMA
from void_pipeline.testworld.corpus import MEMORY, POST, CorpusSpec, generate, record_text

DETECTOR = LoopDetector()


@pytest.mark.parametrize(
    "text",
    [
        "Character sheet for Kaelen: hit points 27, armor class 15.",
        "Rolling a d20 for the saving throw, as the dungeon master asked.",
        "STR 14 DEX 12 CON 13 INT 18 WIS 10 CHA 8",
        "Stats: STR: 16, DEX: 11, WIS: 9",
        "Kaelen stands ready. AC 15, HP 27.",
        "CHARACTER CREATION continues: SPELL SLOT table filled.",
        "Str 8 Dex 14 Con 12, and a grin.",  # any case
        "Strength 16, Dexterity: 12 and wisdom 10.",  # spelled out
        "Armor Class 16, HP 31. Ready.",  # one keyword, and the stat block in words
        "ac 12 / hp 40",
    ],
)
def test_loop_content_is_caught(text: str) -> None:
    assert DETECTOR.why(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "She took the initiative to correct my earlier claim.",  # one keyword alone
        "The character of this network is changing.",
        "I play tabletop games on weekends; the d20 is my favourite die.",  # one keyword
        "Our HP printer is at 27 pages per minute.",  # HP without AC
        "STR is short for street in this address.",  # one ability word, no stat block
        "The AC unit broke; it is 15 degrees outside.",
        "We keep int 32 and str 8 in the C struct.",  # two ability-like words: not three
        "Con 2024 was great; dex 4 never showed.",  # a year is no score, one score is not three
        "Strength in numbers: 12 people showed up.",  # the number is not the score's
        "My armour classification is pending; hit points of the talk: 3.",
    ],
)
def test_ordinary_text_is_not_loop_content(text: str) -> None:
    assert DETECTOR.why(text) is None


def test_the_detector_is_configurable() -> None:
    strict = LoopDetector(min_keywords=1, stat_blocks=False)
    assert strict.why("She took the initiative.") is not None
    assert strict.why("STR 14 DEX 12 CON 13") is None


def test_normalisation_folds_whitespace_and_composes_unicode() -> None:
    assert normalise_text("  cafe\u0301   au\tlait \r\n\n\n\n next ") == "café au lait\n\nnext"
    assert normalise_text(None) == ""


def raw(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    start = datetime(2025, 5, 1, tzinfo=UTC)
    data: list[dict[str, object]] = [
        {
            **{k: None for k in RAW_SCHEMA},
            "uri": uri,
            "cid": "c",
            "did": "did:plc:a",
            "collection": POST,
            "rkey": uri[-3:],
            "created_at": start + timedelta(minutes=minute),
            "text": text,
            "facet_count": 0,
            "mention_dids": [],
            "link_uris": [],
        }
        for uri, text, minute in rows
    ]
    return pl.DataFrame(data, schema=RAW_SCHEMA)


def test_every_input_row_is_kept_or_rejected_with_a_reason() -> None:
    frame = raw(
        [
            ("at://a/p/001", "An ordinary reply that is long enough to keep.", 0),
            ("at://a/p/002", "   ", 1),
            ("at://a/p/003", "Too short.", 2),
            ("at://a/p/004", "Character sheet: hit points 12, armor class 11.", 3),
            ("at://a/p/005", "An ordinary reply that is long  enough to keep.", 4),  # duplicate after normalising
            ("at://a/p/006", "A reply whose whole thread has vanished upstream.", 5),
        ]
    )
    result = filter_records(frame, FilterOptions(orphan_replies="drop"), orphans={"at://a/p/006"})
    assert result.kept["uri"].to_list() == ["at://a/p/001"]
    reasons = dict(zip(result.rejected["uri"], result.rejected["reason"], strict=True))
    assert reasons == {
        "at://a/p/002": "empty",
        "at://a/p/003": "too_short",
        "at://a/p/004": "loop_content",
        "at://a/p/005": "duplicate",
        "at://a/p/006": "ancestors_unavailable",
    }
    assert result.kept.height + result.rejected.height == frame.height
    assert "at://a/p/001" in result.rejected.filter(pl.col("reason") == "duplicate")["detail"][0]
    kept_orphan = filter_records(frame, FilterOptions(orphan_replies="keep"), orphans={"at://a/p/006"})
    assert kept_orphan.kept.filter(pl.col("orphan"))["uri"].to_list() == ["at://a/p/006"]


def test_recall_and_false_positives_against_the_generator_ground_truth() -> None:
    corpus = generate(CorpusSpec(seed=13, agent_posts=6000))
    truth = [
        (r.loop, DETECTOR.why(normalise_text(record_text(r.value))) is not None)
        for r in corpus.records
        if r.collection in (MEMORY, POST)
    ]
    loops = [hit for is_loop, hit in truth if is_loop]
    clean = [hit for is_loop, hit in truth if not is_loop]
    assert len(loops) > 500
    assert sum(loops) / len(loops) >= 0.99
    assert sum(clean) / len(clean) <= 0.01


def test_the_columnwise_filter_agrees_with_the_per_record_rules() -> None:
    corpus = generate(CorpusSpec(seed=17, agent_posts=2000))
    widened = ["Str 8 Dex 14 Con 12", "Armor Class 16, HP 31", "int 32 and str 8", "Strength 16, wisdom 10, CHA 9"]
    odd = ["  a\u0301\t b \r\n\r\n\r\n c  ", "", "x\n \ny", "a \u00a0 b\u2003c\t\td  e", "e\u0301 \t", None]
    texts = [record_text(r.value) for r in corpus.records] + odd + widened
    frame = pl.DataFrame({"text": texts})
    from void_pipeline.lib.curate.filters import loop_expr, normalised_text

    vectorised = frame.with_columns(normalised_text(frame["text"]).alias("text_norm")).with_columns(
        loop_expr(DETECTOR).alias("loop")
    )
    assert vectorised["text_norm"].to_list() == [normalise_text(t) for t in texts]
    assert vectorised["loop"].to_list() == [DETECTOR.why(normalise_text(t)) is not None for t in texts]
