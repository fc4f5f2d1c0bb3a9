"""The agent's context window: a snapshot of its system prompt and memory blocks, fitted to a token budget.

A snapshot is a folder: ``manifest.json`` (``snapshot_date``, ``system_prompt`` file, ``persona_block``,
``blocks``: label, file, priority — lower priority numbers are kept first), the system prompt and one text file
per block. Strategies:

- ``full``: everything, as the agent saw it;
- ``trimmed``: the system prompt, then blocks by priority while they fit the budget; a block that does not fit
  whole is cut at the largest unit that fits (paragraph, sentence, line), never to a bare heading, and a lower
  priority never keeps more than a higher one lost; the report says what was kept, cut or dropped, in tokens;
- ``distilled``: a short persona stub in complete sentences and the tool description — the voice is to be
  learned into the weights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from void_pipeline.lib.model import TokenCounter
from void_pipeline.lib.report import markdown_table

Strategy = Literal["full", "trimmed", "distilled"]
STRATEGIES: tuple[Strategy, ...] = ("full", "trimmed", "distilled")


class SnapshotError(ValueError):
    pass


@dataclass(frozen=True)
class Block:
    label: str
    text: str
    priority: int


@dataclass(frozen=True)
class Snapshot:
    snapshot_date: date
    system_prompt: str
    persona_block: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class BlockReport:
    label: str
    priority: int
    chars: int
    tokens: int
    tokens_kept: int
    status: Literal["kept", "cut", "dropped", "empty"]


@dataclass(frozen=True)
class ContextWindow:
    strategy: Strategy
    text: str
    tokens: int
    blocks: tuple[BlockReport, ...]


def load_snapshot(folder: Path) -> Snapshot:
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise SnapshotError(
            f"no manifest.json in {folder}: a snapshot needs one (see void_pipeline/context_snapshots/demo)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        blocks = tuple(
            Block(str(b["label"]), (folder / b["file"]).read_text().strip(), int(b.get("priority", 100)))
            for b in manifest["blocks"]
        )
        system = (folder / manifest["system_prompt"]).read_text().strip()
        when = date.fromisoformat(manifest["snapshot_date"])
    except (KeyError, ValueError, OSError) as err:
        raise SnapshotError(f"snapshot {folder} is incomplete: {type(err).__name__}: {err}") from err
    persona = str(manifest.get("persona_block", ""))
    if persona and persona not in {b.label for b in blocks}:
        raise SnapshotError(f"persona_block {persona!r} is not one of the snapshot's blocks")
    return Snapshot(when, system, persona, blocks)


XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def block_section(label: str, text: str) -> str:
    """A memory block as the agent sees it: ``<label>`` tags, or for labels that are no valid tag name (``/users/x``)
    a ``<block label="...">`` element that keeps the label as it is."""
    if XML_NAME.match(label):
        return f"<{label}>\n{text}\n</{label}>"
    quoted = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return f'<block label="{quoted}">\n{text}\n</block>'


def render(system_prompt: str, sections: list[str]) -> str:
    if not sections:
        return system_prompt
    return system_prompt + "\n\n<memory_blocks>\n" + "\n\n".join(sections) + "\n</memory_blocks>"


def full_window(snapshot: Snapshot, counter: TokenCounter) -> ContextWindow:
    reports = [
        BlockReport(b.label, b.priority, len(b.text), n, n, "kept" if b.text else "empty")
        for b, n in zip(
            snapshot.blocks, counter.count_many([block_section(b.label, b.text) for b in snapshot.blocks]), strict=True
        )
    ]
    text = render(snapshot.system_prompt, [block_section(b.label, b.text) for b in snapshot.blocks if b.text])
    return ContextWindow("full", text, counter.count(text), tuple(reports))


HEADING = re.compile(r"^\s*(#{1,6}\s.*|\*\*[^*]+\*\*:?|[^.!?]{1,80}:)\s*$")
SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def without_bare_headings(text: str) -> str:
    """``text`` without the headings it ends on (a heading with nothing under it says nothing)."""
    lines = text.rstrip().split("\n")
    while lines and (not lines[-1].strip() or HEADING.match(lines[-1])):
        lines.pop()
    return "\n".join(lines).rstrip()


def cut_points(paragraph: str) -> list[int]:
    """Where ``paragraph`` may be cut, largest unit first: after each sentence, else after each line."""
    sentences = [m.end() for m in SENTENCE_END.finditer(paragraph)]
    if sentences:
        return sentences
    return [i for i, char in enumerate(paragraph) if char == "\n"]


def longest_prefix(text: str, fits: Callable[[str], bool]) -> str:
    """The longest start of ``text`` that ``fits``: whole paragraphs, then sentences (else lines) of the next one;
    never ending on a bare heading. Empty when not even one unit fits."""
    paragraphs = text.split("\n\n")
    taken: list[str] = []
    for paragraph in paragraphs:
        if fits(without_bare_headings("\n\n".join([*taken, paragraph]))):
            taken.append(paragraph)
            continue
        points = cut_points(paragraph)
        low, high, best = 0, len(points) - 1, ""
        while low <= high:  # token counts grow with the prefix: the last point that fits, by bisection
            middle = (low + high) // 2
            candidate = without_bare_headings("\n\n".join([*taken, paragraph[: points[middle]].rstrip()]))
            if fits(candidate):
                best, low = candidate, middle + 1
            else:
                high = middle - 1
        return best or without_bare_headings("\n\n".join(taken))
    return without_bare_headings("\n\n".join(taken))


def trimmed_window(snapshot: Snapshot, counter: TokenCounter, budget_tokens: int) -> ContextWindow:
    """Keep blocks by priority (ties: snapshot order) within ``budget_tokens``. A block that does not fit whole is
    cut at the largest unit that fits (paragraphs, then sentences, then lines), never to a bare heading; a block of
    lower priority never keeps more tokens than a higher-priority one lost.

    Every decision counts the whole rendered window (wrappers and token merges across boundaries included),
    so the result is within budget by construction.
    """
    base = counter.count(render(snapshot.system_prompt, []))
    if base > budget_tokens:
        raise SnapshotError(f"the system prompt alone is {base} tokens, over the budget of {budget_tokens}")
    kept: dict[str, str] = {}

    def cost(extra_label: str, extra_text: str) -> int:
        chosen = {**kept, extra_label: extra_text}
        sections = [block_section(b.label, chosen[b.label]) for b in snapshot.blocks if b.label in chosen]
        return counter.count(render(snapshot.system_prompt, sections))

    reports: dict[str, BlockReport] = {}
    least_lost: int | None = None  # the fewest tokens any higher-priority block lost so far
    order = sorted(range(len(snapshot.blocks)), key=lambda i: (snapshot.blocks[i].priority, i))
    for index in order:
        block = snapshot.blocks[index]
        if not block.text:
            reports[block.label] = BlockReport(block.label, block.priority, 0, 0, 0, "empty")
            continue
        whole = counter.count(block_section(block.label, block.text))

        def fits(text: str, label: str = block.label, cap: int | None = least_lost) -> bool:
            if not text:
                return False
            within_priority = cap is None or counter.count(block_section(label, text)) <= cap
            return within_priority and cost(label, text) <= budget_tokens

        text = block.text if fits(block.text) else longest_prefix(block.text, fits)
        part = counter.count(block_section(block.label, text)) if text else 0
        status: Literal["kept", "cut", "dropped"] = "kept" if text == block.text else "cut" if text else "dropped"
        if text:
            kept[block.label] = text
        if status != "kept":
            lost = whole - part
            least_lost = lost if least_lost is None else min(least_lost, lost)
        reports[block.label] = BlockReport(block.label, block.priority, len(block.text), whole, part, status)
    sections = [block_section(b.label, kept[b.label]) for b in snapshot.blocks if b.label in kept]
    text = render(snapshot.system_prompt, sections)
    return ContextWindow("trimmed", text, counter.count(text), tuple(reports[b.label] for b in snapshot.blocks))


def distilled_window(
    snapshot: Snapshot, counter: TokenCounter, tool_description: str, stub_tokens: int = 160
) -> ContextWindow:
    """A persona stub (the persona block's opening, up to ``stub_tokens``, in complete sentences, never ending on a
    heading) and the tool description."""
    persona = next((b for b in snapshot.blocks if b.label == snapshot.persona_block), None)
    stub = longest_prefix(persona.text, lambda text: counter.count(text) <= stub_tokens) if persona else ""
    text = "\n\n".join([stub, tool_description]).strip()
    reports = tuple(
        BlockReport(
            b.label,
            b.priority,
            len(b.text),
            counter.count(b.text) if b.text else 0,
            counter.count(stub) if b is persona and stub else 0,
            "cut" if b is persona and stub else ("empty" if not b.text else "dropped"),
        )
        for b in snapshot.blocks
    )
    return ContextWindow("distilled", text, counter.count(text), reports)


def drift_report(posts: pl.DataFrame, snapshot_date: date) -> str:
    """Share of the agent's posts older than the snapshot, by month (markdown): the blocks drifted since those
    were written. ``posts`` needs ``created_at``."""
    months = (
        posts.select("created_at")
        .with_columns(pl.col("created_at").dt.strftime("%Y-%m").alias("month"))
        .group_by("month")
        .agg(pl.len().alias("posts"), (pl.col("created_at").dt.date() < snapshot_date).sum().alias("older"))
        .sort("month")
    )
    total, older = int(months["posts"].sum()), int(months["older"].sum())
    head = f"**{older:,} of {total:,} posts ({older / max(total, 1):.0%}) predate the {snapshot_date} snapshot**\n\n"
    return head + markdown_table(months, rows=len(months))
