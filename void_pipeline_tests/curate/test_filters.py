"""The filters: loop detector both ways, normalisation, duplicates, accounting, recall on ground truth, and each
collection's own rules (posts, reasoning, memory, tool calls, the default) with the report that names them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from void_pipeline.lib.curate.filters import (
    POST_RULES,
    FilterCounts,
    FilterOptions,
    LoopDetector,
    counts_by_collection_table,
    filter_records,
    filter_report,
    normalise_text,
    rules_for,
    unclean_filter_output,
)
from void_pipeline.lib.ingest.records import RAW_SCHEMA
from void_pipeline.testworld.corpus import MEMORY, POST, REASONING, TOOL_CALL, CorpusSpec, generate, record_text

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


START = datetime(2025, 5, 1, tzinfo=UTC)


def raw(rows: list[tuple[str, str, int]], collection: str = POST, **columns: list[object]) -> pl.DataFrame:
    """RAW_SCHEMA rows (uri, text, minutes after START); ``columns``: more columns, one value per row."""
    data: list[dict[str, object]] = [
        {
            **{k: None for k in RAW_SCHEMA},
            "uri": uri,
            "cid": "c",
            "did": "did:plc:a",
            "collection": collection,
            "rkey": uri[-3:],
            "created_at": START + timedelta(minutes=minute),
            "text": text,
            "facet_count": 0,
            "mention_dids": [],
            "link_uris": [],
            **{name: values[i] for name, values in columns.items()},
        }
        for i, (uri, text, minute) in enumerate(rows)
    ]
    return pl.DataFrame(data, schema=RAW_SCHEMA)


def reasons(result_rejected: pl.DataFrame) -> dict[str, str]:
    return dict(zip(result_rejected["uri"], result_rejected["reason"], strict=True))


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
    result = filter_records(frame, POST_RULES, FilterOptions(orphan_replies="drop"), orphans={"at://a/p/006"})
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
    kept_orphan = filter_records(frame, POST_RULES, FilterOptions(orphan_replies="keep"), orphans={"at://a/p/006"})
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


def test_a_tool_call_is_judged_on_its_name_and_arguments_never_its_length() -> None:
    frame = raw(
        [
            ("at://a/t/001", "x", 0),  # a one-letter tool name: short, and a name
            ("at://a/t/002", "halt_activity", 1),
            ("at://a/t/003", "send message", 2),  # a space: no function name
            ("at://a/t/004", "", 3),
            ("at://a/t/005", "user_note_view", 4),  # no arguments recorded
            ("at://a/t/006", "user_note_view", 5),  # arguments, but a list
            ("at://a/t/007", "user_note_view", 6),
        ],
        TOOL_CALL,
        tool_args=['{"q": "a"}', "{}", '{"text": "hi"}', "{}", None, "[1, 2]", '{"handle": "ada'],
    )
    result = filter_records(frame, rules_for(TOOL_CALL))
    assert result.kept["uri"].to_list() == ["at://a/t/001", "at://a/t/002"]
    assert set(result.rejected["reason"]) == {"malformed_call"}
    assert dict(zip(result.rejected["uri"], result.rejected["detail"], strict=True)) == {
        "at://a/t/003": "tool name 'send message' is not [A-Za-z0-9_-]{1,64}",
        "at://a/t/004": "tool name '' is not [A-Za-z0-9_-]{1,64}",
        "at://a/t/005": "no arguments",
        "at://a/t/006": "arguments are a list, not a JSON object",
        "at://a/t/007": "arguments are not JSON",
    }
    assert result.by_reason == {"malformed_call": 5, "duplicate": 0}


def test_a_tool_call_is_a_duplicate_only_when_the_same_call_is_recorded_twice_at_the_same_time() -> None:
    search = '{"query": "protocol governance"}'
    frame = raw(
        [
            ("at://a/t/001", "archival_memory_search", 0),
            ("at://a/t/002", "archival_memory_search", 0),  # the same call at the same time: recorded twice
            ("at://a/t/003", "archival_memory_search", 60),  # the same search an hour later: a new call
            ("at://a/t/004", "archival_memory_search", 0),  # same time, other arguments
            ("at://a/t/005", "conversation_search", 0),  # same time and arguments, another tool
        ],
        TOOL_CALL,
        tool_args=[search, search, search, '{"query": "distributed identity"}', search],
    )
    rules = rules_for(TOOL_CALL)
    result = filter_records(frame, rules)
    assert result.kept["uri"].to_list() == ["at://a/t/001", "at://a/t/004", "at://a/t/005", "at://a/t/003"]
    assert result.rejected.select("uri", "reason", "detail").rows() == [
        ("at://a/t/002", "duplicate", "same call (tool, arguments, time) as at://a/t/001")
    ]
    # The blocking check judges the output by the same rules: clean as it is, not with the twin put back.
    assert unclean_filter_output(result.kept, result.rejected, frame, rules, DETECTOR) is None
    twin = result.rejected.drop("reason", "detail").with_columns(orphan=pl.lit(False))
    leaked = pl.concat([result.kept, twin.select(result.kept.columns)])
    expected = "loop 0, malformed calls 0, duplicates 1, accounted True"
    assert unclean_filter_output(leaked, result.rejected.clear(), frame, rules, DETECTOR) == expected
    # Under the post rules, three equal tool names would be two duplicates: the check must not use them here.
    post_view = "loop 0, malformed calls 0, duplicates 2, accounted True"
    assert unclean_filter_output(result.kept, result.rejected, frame, POST_RULES, DETECTOR) == post_view


def test_the_demo_generators_tool_calls_are_never_too_short_or_empty() -> None:
    corpus = generate(CorpusSpec(seed=7, agent_posts=500))
    calls = [r for r in corpus.records if r.collection == TOOL_CALL]
    frame = raw(
        [(f"at://a/t/{i:04}", r.value["tool_name"], i) for i, r in enumerate(calls)],
        TOOL_CALL,
        tool_args=[json.dumps(r.value["arguments"], sort_keys=True) for r in calls],
    )
    result = filter_records(frame, rules_for(TOOL_CALL))
    assert len(calls) == 200 and result.kept.height == 200 and result.rejected.height == 0


THOUGHT = "The mention asks about protocol governance; answer analytically."


def thoughts(collection: str) -> pl.DataFrame:
    return raw(
        [
            ("at://a/r/001", THOUGHT, 0),
            ("at://a/r/002", "Replying now, briefly.", 1),  # 22 characters: a post's length, not a thought's
            ("at://a/r/003", THOUGHT.replace(" ", "  "), 2),  # the same text again, once normalised
            ("at://a/r/004", "Character sheet draft: hit points 12, armor class 14, all set.", 3),
            ("at://a/r/005", " \n ", 4),
        ],
        collection,
    )


def test_reasoning_and_memory_lose_empty_short_loop_and_repeated_prose_at_their_own_floors() -> None:
    reasoning = filter_records(thoughts(REASONING), rules_for(REASONING))
    assert reasoning.kept["uri"].to_list() == ["at://a/r/001"]
    assert reasoning.rejected.select("uri", "reason", "detail").rows() == [
        ("at://a/r/002", "too_short", "22 < 40 characters"),
        ("at://a/r/003", "duplicate", "same text as at://a/r/001"),
        ("at://a/r/004", "loop_content", "keywords: character sheet, hit points, armor class"),
        ("at://a/r/005", "empty", None),
    ]
    assert reasoning.by_reason == {"empty": 1, "too_short": 1, "loop_content": 1, "duplicate": 1}
    memory = filter_records(thoughts(MEMORY), rules_for(MEMORY))  # a terse note of 22 characters is a fact
    assert memory.kept["uri"].to_list() == ["at://a/r/001", "at://a/r/002"]
    # An operator's floor replaces the collection's where it has one; tool calls have none to replace.
    lowered = filter_records(thoughts(REASONING), rules_for(REASONING), FilterOptions(min_chars=10))
    assert lowered.kept["uri"].to_list() == ["at://a/r/001", "at://a/r/002"]
    assert lowered.rules.min_chars == 10 and rules_for(REASONING).min_chars == 40
    assert (
        filter_records(thoughts(TOOL_CALL), rules_for(TOOL_CALL), FilterOptions(min_chars=10)).rules.min_chars is None
    )


def test_an_unknown_collection_gets_the_conservative_default_and_the_report_names_it() -> None:
    rules = rules_for("com.example.note")
    assert rules.name == "default" and rules.reasons == ("empty", "duplicate")
    record = '{"$type": "com.example.note", "text": "ok"}'
    frame = raw(
        [
            ("at://a/n/001", "ok", 0),  # short: no length rule here
            ("at://a/n/002", "ok", 1),  # the same text in another record
            ("at://a/n/003", "ok", 0),  # the same record again
            ("at://a/n/004", "Character sheet: hit points 12, armor class 14.", 2),  # not judged as prose
            ("at://a/n/005", "", 3),
        ],
        "com.example.note",
        raw_json=[record, '{"n": 2, "text": "ok"}', record, '{"n": 4}', '{"n": 5}'],
    )
    result = filter_records(frame, rules)
    assert result.kept["uri"].to_list() == ["at://a/n/001", "at://a/n/002", "at://a/n/004"]
    assert result.rejected.select("uri", "reason", "detail").rows() == [
        ("at://a/n/003", "duplicate", "same record as at://a/n/001"),
        ("at://a/n/005", "empty", None),
    ]
    report = filter_report("com.example.note", result, [])
    assert str(report["rule_set"]).startswith("**default** rules for `com.example.note`:")
    assert (report["input_rows"], report["rejected_rows"]) == (5, 2)
    assert report["filtered_by_collection"] == (
        "| collection | rules | input | kept | removed | empty | too_short | malformed_call | loop_content | duplicate "
        "| ancestors_unavailable |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        "| com.example.note | default | 5 | 3 | 2 | 1 | - | - | - | 1 | - |"
    )


def test_the_report_reads_every_collections_last_output_and_shows_this_ones_fresh(tmp_path: Path) -> None:
    from void_pipeline.lib.curate.filters import read_filter_counts

    calls = filter_records(
        raw([("at://a/t/001", "halt_activity", 0)], TOOL_CALL, tool_args=['{"reason": "done"}']), rules_for(TOOL_CALL)
    )
    posts = filter_records(thoughts(POST), POST_RULES)
    outputs = {c: (tmp_path / f"{c}.parquet", tmp_path / f"{c}.rejected.parquet") for c in (POST, MEMORY, TOOL_CALL)}
    for collection, result in ((POST, posts), (TOOL_CALL, calls)):
        result.kept.write_parquet(outputs[collection][0])
        result.rejected.write_parquet(outputs[collection][1])
    counts = read_filter_counts(outputs)  # memory was never filtered: left out
    assert counts == [
        FilterCounts(
            POST,
            "posts",
            2,
            {"empty": 1, "too_short": 0, "loop_content": 1, "duplicate": 1, "ancestors_unavailable": 0},
        ),
        FilterCounts(TOOL_CALL, "tool calls", 1, {"malformed_call": 0, "duplicate": 0}),
    ]
    stale = FilterCounts(TOOL_CALL, "tool calls", 7, {"malformed_call": 3, "duplicate": 0})
    assert counts_by_collection_table([counts[0], stale]).splitlines()[2:] == [
        "| app.bsky.feed.post | posts | 5 | 2 | 3 | 1 | 0 | - | 1 | 1 | 0 |",
        "| stream.thought.tool.call | tool calls | 10 | 7 | 3 | - | - | 3 | - | 0 | - |",
    ]
    fresh = filter_report(TOOL_CALL, calls, [counts[0], stale])["filtered_by_collection"]
    assert (
        str(fresh).splitlines()[-1] == "| stream.thought.tool.call | tool calls | 1 | 1 | 0 | - | - | 0 | - | 0 | - |"
    )
