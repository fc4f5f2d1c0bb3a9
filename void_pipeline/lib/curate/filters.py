"""What the model must not learn: empty and too-short records, exact duplicates, the character-creation loop,
and replies with no context left. Every removed record keeps its reason; kept + rejected = input.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from void_pipeline.lib.bulk import gc_paused

# The original filter scripts' rule: a record is loop content when it holds at least two of these (case-insensitive).
LOOP_KEYWORDS = (
    "character sheet",
    "character creation",
    "ability score",
    "hit points",
    "armor class",
    "d20",
    "dungeon master",
    "saving throw",
    "spell slot",
    "initiative",
    "proficiency bonus",
)
# Ability scores in any case, abbreviated or spelled out ("Str 8", "DEX: 14", "Wisdom 12"), each with a number.
ABILITY_NAMES = {
    "STR": "str(?:ength)?",
    "DEX": "dex(?:terity)?",
    "CON": "con(?:stitution)?",
    "INT": "int(?:elligence)?",
    "WIS": "wis(?:dom)?",
    "CHA": "cha(?:risma)?",
}
SCORE = r"\b\s*[:=]?\s*\(?[+-]?\d{1,2}\b"
ABILITY = {name: re.compile(rf"(?i)\b{spelled}{SCORE}") for name, spelled in ABILITY_NAMES.items()}
ARMOR_CLASS = re.compile(r"(?i)\b(?:AC|armou?r class)\s*[:=]?\s*\d{1,2}\b")
HIT_POINTS = re.compile(r"(?i)\b(?:HP|hit points)\s*[:=]?\s*\d{1,3}\b")
SPACES = re.compile(r"[^\S\n]+")
BLANK_LINES = re.compile(r"\n{3,}")

Reason = Literal["empty", "too_short", "loop_content", "duplicate", "ancestors_unavailable"]
REASONS: tuple[Reason, ...] = ("empty", "too_short", "loop_content", "duplicate", "ancestors_unavailable")


def normalise_text(text: str | None) -> str:
    """NFC, spaces and tabs folded to one space per run, lines trimmed, at most one blank line in a row."""
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


@dataclass(frozen=True)
class LoopDetector:
    """The original keyword rule plus stat blocks (three ability scores with numbers, or both AC n and HP n)."""

    keywords: tuple[str, ...] = LOOP_KEYWORDS
    min_keywords: int = 2
    stat_blocks: bool = True

    def why(self, text: str) -> str | None:
        """The reason ``text`` is loop content, or None."""
        lowered = text.lower()
        hits = [k for k in self.keywords if k in lowered]
        if len(hits) >= self.min_keywords:
            return "keywords: " + ", ".join(hits)
        if self.stat_blocks:
            abilities = {name for name, pattern in ABILITY.items() if pattern.search(text)}
            if len(abilities) >= 3:
                return "stat block: " + " ".join(sorted(abilities))
            if ARMOR_CLASS.search(text) and HIT_POINTS.search(text):
                return "stat block: AC and HP"
        return None


@dataclass(frozen=True)
class FilterOptions:
    min_chars: int = 20
    loop: LoopDetector = field(default_factory=LoopDetector)
    # Replies whose ancestors are all unavailable: keep them (marked) or drop them.
    orphan_replies: Literal["keep", "drop"] = "keep"


@dataclass
class FilterResult:
    kept: pl.DataFrame
    rejected: pl.DataFrame
    by_reason: dict[str, int]


def normalised_text(texts: pl.Series) -> pl.Series:
    """``normalise_text`` column-wise (the same result). NFC only where a text has a non-ASCII character (ASCII is
    NFC already, and polars normalises every row at ~2 µs); a whitespace run is rewritten only where it is not
    already one space (most runs are)."""
    texts = texts.fill_null("")
    non_ascii = texts.str.contains(r"[^\x00-\x7F]")
    if non_ascii.any():
        texts = texts.scatter(non_ascii.arg_true(), texts.filter(non_ascii).str.normalize("NFC"))
    return (
        texts.str.replace_all("\r\n?", "\n")
        .str.replace_all(r"[^\S\n]*[^\S\n ][^\S\n]*|[^\S\n]{2,}", " ")
        .str.replace_all(r"(?m)^ | $", "")
        .str.replace_all(r"\n{3,}", "\n\n")
        .str.strip_chars()
    )


def loop_expr(detector: LoopDetector, column: str = "text_norm") -> pl.Expr:
    """``detector.why(text) is not None`` as a polars expression."""
    lowered = pl.col(column).str.to_lowercase()
    keyword_hits = pl.sum_horizontal([lowered.str.contains(k, literal=True).cast(pl.Int32) for k in detector.keywords])
    is_loop = keyword_hits >= detector.min_keywords
    if detector.stat_blocks:
        abilities = pl.sum_horizontal(
            [pl.col(column).str.contains(pattern.pattern).cast(pl.Int32) for pattern in ABILITY.values()]
        )
        ac_hp = pl.col(column).str.contains(ARMOR_CLASS.pattern) & pl.col(column).str.contains(HIT_POINTS.pattern)
        is_loop = is_loop | (abilities >= 3) | ac_hp
    return is_loop


@gc_paused()
def filter_records(frame: pl.DataFrame, options: FilterOptions, orphans: set[str] | None = None) -> FilterResult:
    """Filter RAW_SCHEMA rows. ``orphans``: URIs of replies whose ancestors are all unavailable.

    Adds ``text_norm`` (the normalised text) and ``orphan`` (bool) to kept rows; rejected rows get ``reason``
    and ``detail``. Duplicates keep the earliest record. One reason per rejected row, checked in REASONS order.
    Column-wise (polars) for speed; the detail text is built for rejected rows only.
    """
    orphan_list = list(orphans or set())
    ordered = frame.sort("created_at", "uri")
    annotated = ordered.with_columns(normalised_text(ordered["text"]).alias("text_norm")).with_columns(
        loop_expr(options.loop).alias("_loop"),
        pl.col("uri").is_in(orphan_list).alias("orphan"),
        pl.col("text_norm").str.len_chars().alias("_chars"),
    )
    early = (
        pl.when(pl.col("_chars") == 0)
        .then(pl.lit("empty"))
        .when(pl.col("_chars") < options.min_chars)
        .then(pl.lit("too_short"))
        .when(pl.col("_loop"))
        .then(pl.lit("loop_content"))
    )
    annotated = annotated.with_columns(early.alias("reason"))
    # Among the rows that survive so far, the first of each text is the original; the rest are duplicates.
    survivors = annotated["reason"].is_null()
    first = (
        annotated.filter(survivors)
        .select("uri", "text_norm")
        .unique(subset="text_norm", keep="first", maintain_order=True)
    )
    original_of = dict(zip(first["text_norm"], first["uri"], strict=True))
    annotated = annotated.with_columns(
        pl.when(pl.col("reason").is_null() & ~pl.col("uri").is_in(first["uri"].implode()))
        .then(pl.lit("duplicate"))
        .when(pl.col("reason").is_null() & pl.col("orphan") & pl.lit(options.orphan_replies == "drop"))
        .then(pl.lit("ancestors_unavailable"))
        .otherwise(pl.col("reason"))
        .alias("reason")
    ).drop("_loop", "_chars")
    kept = annotated.filter(pl.col("reason").is_null()).drop("reason")
    rejected = annotated.filter(pl.col("reason").is_not_null()).drop("orphan")
    details = [
        rejection_detail(reason, text, options, original_of)
        for reason, text in zip(rejected["reason"].to_list(), rejected["text_norm"].to_list(), strict=True)
    ]
    rejected = rejected.with_columns(pl.Series("detail", details, dtype=pl.String))
    by_reason: dict[str, int] = {r: 0 for r in REASONS}
    by_reason.update(dict(rejected.group_by("reason").len().iter_rows()))
    return FilterResult(kept, rejected, by_reason)


def rejection_detail(reason: str, text: str, options: FilterOptions, original_of: dict[str, str]) -> str | None:
    if reason == "too_short":
        return f"{len(text)} < {options.min_chars} characters"
    if reason == "loop_content":
        return options.loop.why(text)
    if reason == "duplicate":
        return f"same text as {original_of.get(text)}"
    if reason == "ancestors_unavailable":
        return "no ancestor of this reply could be fetched"
    return None


def orphan_replies(thread_context: pl.DataFrame) -> set[str]:
    """Replies none of whose ancestors could be fetched (thread_context rows: uri, ancestors[].available)."""
    available = thread_context.select(
        "uri", pl.col("ancestors").list.eval(pl.element().struct.field("available")).list.any().alias("any")
    )
    return set(available.filter(~pl.col("any").fill_null(False))["uri"].to_list())


def unclean_filter_output(
    kept: pl.DataFrame, rejected: pl.DataFrame, raw: pl.DataFrame, detector: LoopDetector
) -> str | None:
    """What is wrong with one collection's filter output (loop content or duplicates kept; kept + rejected not
    exactly the input), or None."""
    loops = sum(detector.why(t) is not None for t in kept["text_norm"].to_list())
    duplicates = kept.height - kept["text_norm"].n_unique()
    accounted = kept.height + rejected.height == raw.height and set(kept["uri"]) | set(rejected["uri"]) == set(
        raw["uri"]
    )
    return (
        None
        if not (loops or duplicates) and accounted
        else f"loop {loops}, duplicates {duplicates}, accounted {accounted}"
    )
