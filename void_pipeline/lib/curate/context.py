"""The agent's context window: a snapshot of its system prompt and memory blocks, fitted to a token budget.

A snapshot is a folder: the system prompt (``system_prompt.md``) and one file per memory block (``block-<label>.txt``
or ``<label>.md``, here or in ``blocks/``; a ``/`` in a label is ``%2F`` in the file name). ``manifest.json`` is
optional: ``snapshot_date``, ``system_prompt``, ``persona_block`` and ``blocks`` (label, file, priority — lower
numbers are kept first) override what the files say; what it leaves out is reported, never ignored. Strategies:

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
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import polars as pl

from void_pipeline.lib.files import NotText, read_utf8
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
    warnings: tuple[str, ...] = ()  # what was missing or guessed: shown in context_window's metadata


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


SYSTEM_PROMPT_NAMES = ("system_prompt.md", "system_prompt.txt", "system.md", "system.txt")
MANIFEST_STRINGS = ("snapshot_date", "system_prompt", "persona_block")
DEFAULT_PRIORITY = 100


def block_files(folder: Path) -> dict[str, Path]:
    """label → file for a snapshot folder without a manifest: ``block-<label>.txt`` or ``<label>.md`` in the folder
    or its ``blocks/``. A label with ``/`` is written percent-encoded in the file name (``%2Fnote_directory.md``)."""
    found: dict[str, Path] = {}
    for place in (folder, folder / "blocks"):
        for path in sorted(place.glob("*")) if place.is_dir() else []:
            if not path.is_file() or path.name in SYSTEM_PROMPT_NAMES or path.name in ("manifest.json", "README.md"):
                continue
            if path.name.startswith("block-") and path.suffix == ".txt":
                found[unquote(path.stem.removeprefix("block-"))] = path
            elif path.suffix == ".md":
                found[unquote(path.stem)] = path
    return found


def read_manifest(path: Path) -> dict[str, Any]:
    """A snapshot's ``manifest.json``, its shape checked: what is wrong is named with the file and the field."""
    try:
        manifest = json.loads(read_utf8(path, "snapshot manifest"))
    except NotText as err:
        raise SnapshotError(str(err)) from err
    except json.JSONDecodeError as err:
        raise SnapshotError(f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from err
    if not isinstance(manifest, dict):
        raise SnapshotError(f"{path} is not a JSON object (snapshot_date, system_prompt, persona_block, blocks)")
    problems = [f"{key} is not a string" for key in MANIFEST_STRINGS if not isinstance(manifest.get(key, ""), str)]
    if isinstance(manifest.get("snapshot_date"), str):
        try:
            date.fromisoformat(manifest["snapshot_date"])
        except ValueError:
            problems.append(f"snapshot_date {manifest['snapshot_date']!r} is not a date (YYYY-MM-DD)")
    entries = manifest.get("blocks", [])
    if not isinstance(entries, list):
        problems.append("blocks is not a list")
        entries = []
    for number, entry in enumerate(entries, 1):
        fields = entry if isinstance(entry, dict) else {}
        priority = fields.get("priority")
        if not (isinstance(fields.get("label"), str) and isinstance(fields.get("file"), str)):
            problems.append(f'blocks entry {number} needs a "label" and a "file" (strings)')
        elif priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
            problems.append(f"blocks entry {number} ({fields['label']}): priority is not a whole number")
    if problems:
        raise SnapshotError(f"{path}: " + "; ".join(problems))
    return manifest


def load_snapshot(folder: Path) -> Snapshot:
    """A snapshot folder: a system prompt and one file per block; ``manifest.json`` is optional and names the
    snapshot date, the persona block, files and priorities. What is missing or unlisted becomes a warning; a file
    that cannot be used is an error naming it."""
    if not folder.is_dir():
        raise SnapshotError(f"snapshot {folder} is not a folder")
    manifest_path = folder / "manifest.json"
    warnings: list[str] = []
    try:
        manifest = read_manifest(manifest_path) if manifest_path.exists() else {}
        files = block_files(folder)
        listed: dict[str, tuple[Path, int | None]] = {}
        for entry in manifest.get("blocks", []):
            listed[entry["label"]] = (folder / entry["file"], entry.get("priority"))
        unlisted = {label: path for label, path in files.items() if path not in {f for f, _ in listed.values()}}
        if manifest and unlisted:
            warnings.append(f"files not in manifest.json, added at the lowest priority: {', '.join(sorted(unlisted))}")
        entries = {**listed, **{label: (path, None) for label, path in unlisted.items() if label not in listed}}
        if not entries:
            raise SnapshotError(f"snapshot {folder} holds no memory blocks (block-<label>.txt or <label>.md files)")
        unprioritised = sorted(label for label, (_, priority) in entries.items() if priority is None)
        if unprioritised and len(unprioritised) == len(entries):
            warnings.append("no block has a priority: blocks are kept in file order (set priorities in manifest.json)")
        elif unprioritised:
            warnings.append(f"blocks without a priority come last: {', '.join(unprioritised)}")
        blocks = tuple(
            Block(label, read_utf8(path, "snapshot block").strip(), DEFAULT_PRIORITY if priority is None else priority)
            for label, (path, priority) in entries.items()
        )
        system_file = (
            folder / manifest["system_prompt"]
            if "system_prompt" in manifest
            else next((folder / name for name in SYSTEM_PROMPT_NAMES if (folder / name).exists()), None)
        )
        if system_file is None:
            raise SnapshotError(f"snapshot {folder} has no system prompt ({' or '.join(SYSTEM_PROMPT_NAMES)})")
        system = read_utf8(system_file, "snapshot system prompt").strip()
        if "snapshot_date" in manifest:
            when = date.fromisoformat(manifest["snapshot_date"])
        else:
            newest = max(p.stat().st_mtime for p, _ in entries.values())
            when = datetime.fromtimestamp(newest, UTC).date()
            warnings.append(f"no snapshot_date in manifest.json: the files' date {when} stands in")
    except NotText as err:  # names the file already
        raise SnapshotError(str(err)) from err
    except OSError as err:  # a listed file that is missing or unreadable: name it, not only the folder
        raise SnapshotError(f"snapshot {folder} is incomplete: {err.filename or err}: {err.strerror or err}") from err
    labels = [b.label for b in blocks]
    persona = str(manifest.get("persona_block") or next((label for label in labels if "persona" in label), ""))
    if persona and persona not in labels:
        raise SnapshotError(f"persona_block {persona!r} is not one of the snapshot's blocks")
    if not persona:
        warnings.append("no persona block (persona_block in manifest.json): the distilled prompt has no persona stub")
    elif "persona_block" not in manifest:
        warnings.append(f"persona block guessed from its label: {persona}")
    return Snapshot(when, system, persona, blocks, tuple(warnings))


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


def context_windows(
    snapshot: Snapshot, counter: TokenCounter, budget_tokens: int, tool_description: str
) -> dict[str, ContextWindow]:
    """All three variants: full, trimmed to ``budget_tokens`` (SnapshotError when the system prompt alone is over
    it), distilled."""
    return {
        "full": full_window(snapshot, counter),
        "trimmed": trimmed_window(snapshot, counter, budget_tokens),
        "distilled": distilled_window(snapshot, counter, tool_description),
    }


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
