"""What the model must not learn, per collection: each collection gets the rules that mean something for it
(CollectionRules: posts, reasoning, memory, tool calls, and a conservative default for any other). Prose loses
empty, too-short, loop and duplicate text; a tool call is judged on its name and arguments and is a duplicate only
when the same call was recorded twice at the same time. Every removed record keeps its reason; kept + rejected =
input.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import polars as pl

from void_pipeline.lib.bulk import gc_paused
from void_pipeline.lib.ingest.records import MEMORY, POST, REASONING, TOOL_CALL
from void_pipeline.lib.report import markdown_table

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

# A tool name as OpenAI-compatible tool calling accepts it (what the model learns to emit).
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Reason = Literal["empty", "too_short", "malformed_call", "loop_content", "duplicate", "ancestors_unavailable"]
REASONS: tuple[Reason, ...] = (
    "empty",
    "too_short",
    "malformed_call",
    "loop_content",
    "duplicate",
    "ancestors_unavailable",
)


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


# What makes two records the same, per kind of duplicate: the normalised text (prose), the same call recorded twice
# (same author, tool, arguments and time: two equal searches a day apart are two calls), or the whole record.
Sameness = Literal["text", "call", "record"]
SAME_COLUMNS: dict[Sameness, tuple[str, ...]] = {
    "text": ("text_norm",),
    "call": ("did", "text_norm", "tool_args", "created_at"),
    "record": ("raw_json",),
}
SAME_AS: dict[Sameness, str] = {
    "text": "same text as",
    "call": "same call (tool, arguments, time) as",
    "record": "same record as",
}


@dataclass(frozen=True)
class CollectionRules:
    """The rules one collection gets; ``name`` is what the report calls the set. ``min_chars`` None: no length rule.
    ``calls``: the text is a tool name, judged with its arguments (malformed_call) instead of as prose."""

    name: str
    min_chars: int | None
    loop: bool
    duplicates: Sameness
    calls: bool = False
    orphans: bool = False  # replies whose ancestors are all unavailable (posts have threads)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """The reasons this set can give, in the order they are checked."""
        applies: dict[Reason, bool] = {
            "empty": not self.calls,
            "too_short": not self.calls and self.min_chars is not None,
            "malformed_call": self.calls,
            "loop_content": self.loop,
            "duplicate": True,
            "ancestors_unavailable": self.orphans,
        }
        return tuple(r for r in REASONS if applies[r])

    def describe(self) -> dict[Reason, str]:
        """Each rule in words, for the report."""
        words: dict[Reason, str] = {
            "empty": "no text after normalising",
            "too_short": f"fewer than {self.min_chars} characters",
            "malformed_call": "tool name not [A-Za-z0-9_-]{1,64}, or arguments missing or not a JSON object",
            "loop_content": "character-creation loop (loop keywords or a stat block)",
            "duplicate": SAME_AS[self.duplicates] + " an earlier record",
            "ancestors_unavailable": "reply none of whose ancestors could be fetched (removed with orphan_replies: drop)",
        }
        return {r: words[r] for r in self.reasons}


POST_RULES = CollectionRules("posts", min_chars=20, loop=True, duplicates="text", orphans=True)
# A thought is a sentence or more; under 40 characters it says nothing a reply could be trained to follow.
REASONING_RULES = CollectionRules("reasoning", min_chars=40, loop=True, duplicates="text")
# Memory notes are terse facts ("@ada prefers short answers."), and the loop's home (46% of recent records).
MEMORY_RULES = CollectionRules("memory", min_chars=20, loop=True, duplicates="text")
TOOL_CALL_RULES = CollectionRules("tool calls", min_chars=None, loop=False, duplicates="call", calls=True)
# A collection nobody has looked at: remove only what is certainly useless (no text, the same record twice).
DEFAULT_RULES = CollectionRules("default", min_chars=None, loop=False, duplicates="record")
RULES: dict[str, CollectionRules] = {
    POST: POST_RULES,
    REASONING: REASONING_RULES,
    MEMORY: MEMORY_RULES,
    TOOL_CALL: TOOL_CALL_RULES,
}


def rules_for(collection: str) -> CollectionRules:
    """The collection's own rules, or DEFAULT_RULES for one without (VOID_COLLECTIONS may add any)."""
    return RULES.get(collection, DEFAULT_RULES)


@dataclass(frozen=True)
class FilterOptions:
    min_chars: int | None = None  # overrides the rules' length floor where they have one
    loop: LoopDetector = field(default_factory=LoopDetector)
    # Replies whose ancestors are all unavailable: keep them (marked) or drop them.
    orphan_replies: Literal["keep", "drop"] = "keep"


@dataclass
class FilterResult:
    kept: pl.DataFrame
    rejected: pl.DataFrame
    by_reason: dict[str, int]  # every reason the rules can give, 0 included
    rules: CollectionRules  # as applied (with the options' length floor)

    def summary(self, collection: str) -> str:
        """One line for the run's log."""
        removed = ", ".join(f"{k} {v}" for k, v in self.by_reason.items() if v) or "nothing"
        return (
            f"{collection} ({self.rules.name} rules): {self.kept.height + self.rejected.height:,} in = "
            f"{self.kept.height:,} kept + {self.rejected.height:,} removed ({removed})"
        )


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


def call_problem(tool_name: str | None, tool_args: str | None) -> str | None:
    """What is wrong with a tool-call record's name or arguments (JSON, as ingest stores them), or None."""
    if not tool_name or not TOOL_NAME.match(tool_name):
        return f"tool name {tool_name!r} is not [A-Za-z0-9_-]{{1,64}}"
    if tool_args is None:
        return "no arguments"
    try:
        arguments = json.loads(tool_args)
    except ValueError:
        return "arguments are not JSON"
    return None if isinstance(arguments, dict) else f"arguments are a {type(arguments).__name__}, not a JSON object"


@gc_paused()
def filter_records(
    frame: pl.DataFrame,
    rules: CollectionRules,
    options: FilterOptions | None = None,
    orphans: set[str] | None = None,
) -> FilterResult:
    """Filter one collection's RAW_SCHEMA rows under ``rules`` (``rules_for(collection)``). ``orphans``: URIs of
    replies whose ancestors are all unavailable (used where the rules have ``orphans``).

    Adds ``text_norm`` (the normalised text) and ``orphan`` (bool) to kept rows; rejected rows get ``reason``
    and ``detail``. Duplicates keep the earliest record. One reason per rejected row, checked in ``rules.reasons``
    order. Column-wise (polars) for speed; the detail text is built for rejected rows only.
    """
    options = options or FilterOptions()
    if options.min_chars is not None and rules.min_chars is not None:
        rules = replace(rules, min_chars=options.min_chars)
    orphan_list = list(orphans or set()) if rules.orphans else []
    ordered = frame.sort("created_at", "uri")
    problems = (
        [call_problem(n, a) for n, a in zip(ordered["text"], ordered["tool_args"], strict=True)]
        if rules.calls
        else [None] * ordered.height
    )
    annotated = ordered.with_columns(
        normalised_text(ordered["text"]).alias("text_norm"), pl.Series("_call", problems, dtype=pl.String)
    ).with_columns(
        loop_expr(options.loop).alias("_loop"),
        pl.col("uri").is_in(orphan_list).alias("orphan"),
        pl.col("text_norm").str.len_chars().alias("_chars"),
    )
    early: dict[Reason, pl.Expr] = {
        "empty": pl.col("_chars") == 0,
        "too_short": pl.col("_chars") < (rules.min_chars or 0),
        "malformed_call": pl.col("_call").is_not_null(),
        "loop_content": pl.col("_loop"),
    }
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for name in reversed([r for r in rules.reasons if r in early]):
        reason = pl.when(early[name]).then(pl.lit(name)).otherwise(reason)
    annotated = annotated.with_columns(reason.alias("reason"))
    # Among the rows that survive so far, the first of each key is the original; the rest are duplicates.
    key = list(SAME_COLUMNS[rules.duplicates])
    originals = (
        annotated.filter(pl.col("reason").is_null())
        .unique(subset=key, keep="first", maintain_order=True)
        .select(*key, pl.col("uri").alias("_original"))
    )
    annotated = annotated.join(originals, on=key, how="left", nulls_equal=True, maintain_order="left").with_columns(
        pl.when(pl.col("reason").is_null() & (pl.col("_original") != pl.col("uri")))
        .then(pl.lit("duplicate"))
        .when(pl.col("reason").is_null() & pl.col("orphan") & pl.lit(options.orphan_replies == "drop"))
        .then(pl.lit("ancestors_unavailable"))
        .otherwise(pl.col("reason"))
        .alias("reason")
    )
    kept = annotated.filter(pl.col("reason").is_null()).drop("reason", "_loop", "_chars", "_call", "_original")
    rejected = annotated.filter(pl.col("reason").is_not_null())
    details = [
        rejection_detail(row, rules, options)
        for row in rejected.select("reason", "text_norm", "_call", "_original").iter_rows(named=True)
    ]
    rejected = rejected.drop("orphan", "_loop", "_chars", "_call", "_original").with_columns(
        pl.Series("detail", details, dtype=pl.String)
    )
    by_reason: dict[str, int] = {r: 0 for r in rules.reasons}
    by_reason.update(dict(rejected.group_by("reason").len().iter_rows()))
    return FilterResult(kept, rejected, by_reason, rules)


def rejection_detail(row: dict[str, str | None], rules: CollectionRules, options: FilterOptions) -> str | None:
    reason, text = row["reason"], row["text_norm"] or ""
    if reason == "too_short":
        return f"{len(text)} < {rules.min_chars} characters"
    if reason == "malformed_call":
        return row["_call"]
    if reason == "loop_content":
        return options.loop.why(text)
    if reason == "duplicate":
        return f"{SAME_AS[rules.duplicates]} {row['_original']}"
    if reason == "ancestors_unavailable":
        return "no ancestor of this reply could be fetched"
    return None


def orphan_replies(thread_context: pl.DataFrame) -> set[str]:
    """Replies none of whose ancestors could be fetched (thread_context rows: uri, ancestors[].available)."""
    available = thread_context.select(
        "uri", pl.col("ancestors").list.eval(pl.element().struct.field("available")).list.any().alias("any")
    )
    return set(available.filter(~pl.col("any").fill_null(False))["uri"].to_list())


@dataclass(frozen=True)
class FilterCounts:
    """One collection's filter output in numbers: kept, and removed per reason its rules can give."""

    collection: str
    rules: str
    kept: int
    removed: dict[str, int]


def filter_counts(collection: str, result: FilterResult) -> FilterCounts:
    return FilterCounts(collection, result.rules.name, result.kept.height, dict(result.by_reason))


def read_filter_counts(outputs: Mapping[str, tuple[Path, Path]]) -> list[FilterCounts]:
    """The counts of each collection's last filter output (collection → kept and rejected Parquet files); a
    collection not filtered yet is left out."""
    counts = []
    for collection, (kept_path, rejected_path) in outputs.items():
        if not (kept_path.exists() and rejected_path.exists()):
            continue
        kept = pl.scan_parquet(kept_path).select(pl.len()).collect().item()
        reasons = pl.read_parquet(rejected_path, columns=["reason"])
        rules = rules_for(collection)
        removed: dict[str, int] = {r: 0 for r in rules.reasons}
        removed.update(dict(reasons.group_by("reason").len().iter_rows()))
        counts.append(FilterCounts(collection, rules.name, kept, removed))
    return counts


def counts_by_collection_table(counts: list[FilterCounts]) -> str:
    """Kept and removed per collection and per reason, as markdown; a reason the collection's rules do not give
    shows "-" (0 means the rule ran and removed nothing)."""
    if not counts:
        return "_none_"
    header = ["collection", "rules", "input", "kept", "removed", *REASONS]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for c in counts:
        removed = sum(c.removed.values())
        by_reason = [f"{c.removed[r]:,}" if r in c.removed else "-" for r in REASONS]
        cells = [c.collection, c.rules, f"{c.kept + removed:,}", f"{c.kept:,}", f"{removed:,}", *by_reason]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def filter_report(collection: str, result: FilterResult, collections: list[FilterCounts]) -> dict[str, int | str]:
    """filtered_records' metadata: counts (int) and markdown (str). ``collections``: every collection's counts
    (this one's from ``result``, the others' from their last output)."""
    mine = filter_counts(collection, result)
    rows = [mine if c.collection == collection else c for c in collections]
    rows += [] if any(c.collection == collection for c in rows) else [mine]
    rules = "\n".join(f"- `{r}`: {words}" for r, words in result.rules.describe().items())
    examples = result.rejected.group_by("reason", maintain_order=True).head(2).select("reason", "detail", "text_norm")
    return {
        "input_rows": result.kept.height + result.rejected.height,
        "rejected_rows": result.rejected.height,
        "orphan_replies": int(result.kept["orphan"].sum()),
        "rule_set": f"**{result.rules.name}** rules for `{collection}`:\n\n{rules}",
        "rejected_by_reason": counts_by_collection_table([mine]),
        "filtered_by_collection": counts_by_collection_table(rows),
        "rejected_examples": markdown_table(examples, rows=10) if examples.height else "_none_",
    }


def unclean_filter_output(
    kept: pl.DataFrame, rejected: pl.DataFrame, raw: pl.DataFrame, rules: CollectionRules, detector: LoopDetector
) -> str | None:
    """What is wrong with one collection's filter output under its rules (loop content, malformed calls or
    duplicates kept; kept + rejected not exactly the input), or None."""
    loops = sum(detector.why(t) is not None for t in kept["text_norm"].to_list()) if rules.loop else 0
    malformed = (
        sum(call_problem(n, a) is not None for n, a in zip(kept["text"], kept["tool_args"], strict=True))
        if rules.calls
        else 0
    )
    duplicates = kept.height - kept.n_unique(subset=list(SAME_COLUMNS[rules.duplicates])) if kept.height else 0
    accounted = kept.height + rejected.height == raw.height and set(kept["uri"]) | set(rejected["uri"]) == set(
        raw["uri"]
    )
    problems = loops or malformed or duplicates or not accounted
    return (
        f"loop {loops}, malformed calls {malformed}, duplicates {duplicates}, accounted {accounted}"
        if problems
        else None
    )
