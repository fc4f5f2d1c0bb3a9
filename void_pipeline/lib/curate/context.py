"""The agent's context window: a snapshot of its system prompt and memory blocks, fitted to a token budget.

A context source is one of:

- a Letta Agent File (``.af``, lib/curate/agent_file.py): the agent's system text, its blocks with their descriptions
  and limits (in the agent's order), its tools with their schemas and its agent type;
- a snapshot folder: the system prompt (``system_prompt.md``, or ``system-prompt.txt`` as the seed's export tool
  writes it) and one file per memory block (``block-<label>.txt`` or ``<label>.md``, here or in ``blocks/``; a ``/``
  in a label is ``%2F``, or ``_`` in the export tool's names). The export tool's other files are read for what they
  are: ``prompt-template.txt`` is the handler's mention template, ``full-context.txt`` and
  ``system-prompt-trimmed.txt`` are its own renderings (not blocks). ``manifest.json`` is optional:
  ``snapshot_date``, ``system_prompt``, ``persona_block`` and ``blocks`` (label, file, priority — lower numbers are
  kept first) override what the files say; what it leaves out is reported, never ignored.

Without priorities (no manifest, or an agent file) the persona block is kept first and the other blocks follow in
their order; a trimmed window that cannot keep the persona is an error, never a window without it.

The window's text is the system message as the runtime sends it (``SystemRenderer``): ``direct`` (our own layout:
the system prompt, then ``<memory_blocks>``) or Letta's compile (lib/curate/letta.py). Strategies:

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import unquote

import polars as pl

from void_pipeline.lib.curate.agent_file import AgentFile, AgentFileError, load_agent_file
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
    description: str | None = None  # what Letta shows beside the block (agent files)
    limit: int | None = None  # the block's character limit (agent files)
    read_only: bool = False


@dataclass(frozen=True)
class Snapshot:
    snapshot_date: date
    system_prompt: str
    persona_block: str
    blocks: tuple[Block, ...]
    warnings: tuple[str, ...] = ()  # what was missing or guessed: shown in context_window's metadata
    agent: AgentFile | None = None  # the agent file it was read from: agent type, tools, ids
    prompt_template: Path | None = None  # the handler's mention template found beside the blocks


class SystemRenderer(Protocol):
    """The system message a runtime sends for a snapshot with ``kept`` block texts (label → text; blocks not in it
    are left out), and one block's part of it (its token count is reported per block)."""

    name: str

    def system(self, snapshot: Snapshot, kept: Mapping[str, str]) -> str: ...

    def section(self, block: Block, text: str) -> str: ...


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
    kept: Mapping[str, str] = field(default_factory=dict)  # label → the text of each block this window shows


SYSTEM_PROMPT_NAMES = ("system_prompt.md", "system_prompt.txt", "system-prompt.txt", "system.md", "system.txt")
# The seed's export tool writes these beside the blocks: renderings of its own, and the handler's template.
EXPORT_RENDERINGS = ("full-context.txt", "system-prompt-trimmed.txt")
EXPORT_TEMPLATE = "prompt-template.txt"
NOT_BLOCKS = frozenset(["manifest.json", "README.md", *EXPORT_RENDERINGS, EXPORT_TEMPLATE])
MANIFEST_STRINGS = ("snapshot_date", "system_prompt", "persona_block")
DEFAULT_PRIORITY = 100


def block_files(folder: Path) -> dict[str, Path]:
    """label → file for a snapshot folder without a manifest: ``block-<label>.txt`` or ``<label>.md`` in the folder
    or its ``blocks/``. A label with ``/`` is written percent-encoded in the file name (``%2Fnote_directory.md``);
    the export tool writes it ``_``, which cannot be told from a real ``_``: the name is taken as it is."""
    found: dict[str, Path] = {}
    for place in (folder, folder / "blocks"):
        for path in sorted(place.glob("*")) if place.is_dir() else []:
            if not path.is_file() or path.name in SYSTEM_PROMPT_NAMES or path.name in NOT_BLOCKS:
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
    persona = str(manifest.get("persona_block") or guess_persona([b.label for b in blocks]))
    if persona and persona not in [b.label for b in blocks]:
        raise SnapshotError(f"persona_block {persona!r} is not one of the snapshot's blocks")
    if persona and "persona_block" not in manifest:
        warnings.append(f"persona block guessed from its label: {persona}")
    template = folder / EXPORT_TEMPLATE
    snapshot = Snapshot(when, system, persona, blocks, tuple(warnings), None, template if template.is_file() else None)
    return persona_first(snapshot) if unprioritised and len(unprioritised) == len(entries) else snapshot


def guess_persona(labels: list[str]) -> str:
    return next((label for label in labels if "persona" in label.lower()), "")


def persona_first(snapshot: Snapshot) -> Snapshot:
    """Priorities for a source that gives none: the persona block first, then the blocks in their order. The rule
    is said in the warnings (context_window's metadata and the context command print them)."""
    if not snapshot.persona_block:
        rule = "no persona block (a label with 'persona', or persona_block in manifest.json): blocks in their order"
        return replace(snapshot, warnings=(*snapshot.warnings, rule))
    blocks = tuple(
        replace(block, priority=0 if block.label == snapshot.persona_block else n + 1)
        for n, block in enumerate(snapshot.blocks)
    )
    rule = f"no priorities: the persona block ({snapshot.persona_block}) is kept first, the others in their order"
    warnings = tuple(w for w in snapshot.warnings if not w.startswith("no block has a priority"))
    return replace(snapshot, blocks=blocks, warnings=(*warnings, rule))


def snapshot_from_agent_file(agent: AgentFile, when: date) -> Snapshot:
    """The agent file's system text and blocks (in the agent's order, descriptions and limits kept); priorities from
    the blocks' metadata, else the persona block first."""
    blocks = tuple(
        Block(
            b.label,
            b.value,
            DEFAULT_PRIORITY if b.priority is None else b.priority,
            b.description,
            b.limit,
            b.read_only,
        )
        for b in agent.blocks
    )
    persona = guess_persona([b.label for b in blocks])
    snapshot = Snapshot(when, agent.system, persona, blocks, (), agent)
    return snapshot if any(b.priority is not None for b in agent.blocks) else persona_first(snapshot)


def load_context_source(path: Path) -> Snapshot:
    """A Letta agent file (``.af``, or any JSON file with ``agents[]``) or a snapshot folder. An agent file's
    snapshot date is the file's modification date."""
    if path.is_dir():
        return load_snapshot(path)
    if not path.exists():
        raise SnapshotError(f"context source {path} does not exist (a snapshot folder or a Letta .af file)")
    try:
        agent = load_agent_file(path)
    except AgentFileError as err:
        raise SnapshotError(str(err)) from err
    return snapshot_from_agent_file(agent, datetime.fromtimestamp(path.stat().st_mtime, UTC).date())


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


class DirectSystem:
    """Our own layout, for operators who call the endpoint without Letta: the system prompt, then the kept
    non-empty blocks in ``<memory_blocks>``."""

    name = "direct"

    def system(self, snapshot: Snapshot, kept: Mapping[str, str]) -> str:
        sections = [block_section(b.label, kept[b.label]) for b in snapshot.blocks if kept.get(b.label)]
        return render(snapshot.system_prompt, sections)

    def section(self, block: Block, text: str) -> str:
        return block_section(block.label, text)


DIRECT = DirectSystem()


def full_window(snapshot: Snapshot, counter: TokenCounter, renderer: SystemRenderer = DIRECT) -> ContextWindow:
    reports = [
        BlockReport(b.label, b.priority, len(b.text), n, n, "kept" if b.text else "empty")
        for b, n in zip(
            snapshot.blocks, counter.count_many([renderer.section(b, b.text) for b in snapshot.blocks]), strict=True
        )
    ]
    kept = {b.label: b.text for b in snapshot.blocks}
    text = renderer.system(snapshot, kept)
    return ContextWindow("full", text, counter.count(text), tuple(reports), kept)


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


def trimmed_window(
    snapshot: Snapshot, counter: TokenCounter, budget_tokens: int, renderer: SystemRenderer = DIRECT
) -> ContextWindow:
    """Keep blocks by priority (ties: snapshot order) within ``budget_tokens``. A block that does not fit whole is
    cut at the largest unit that fits (paragraphs, then sentences, then lines), never to a bare heading; a block of
    lower priority never keeps more tokens than a higher-priority one lost. The persona block, when the snapshot
    names one, must be kept (whole or cut): SnapshotError otherwise.

    Every decision counts the whole rendered system message (wrappers and token merges across boundaries included),
    so the result is within budget by construction.
    """
    empty = {b.label: "" for b in snapshot.blocks if not b.text}  # shown as they are (Letta shows empty blocks)
    base = counter.count(renderer.system(snapshot, empty))
    if base > budget_tokens:
        raise SnapshotError(f"the system prompt alone is {base} tokens, over the budget of {budget_tokens}")
    kept: dict[str, str] = dict(empty)

    def cost(extra_label: str, extra_text: str) -> int:
        return counter.count(renderer.system(snapshot, {**kept, extra_label: extra_text}))

    reports: dict[str, BlockReport] = {}
    least_lost: int | None = None  # the fewest tokens any higher-priority block lost so far
    order = sorted(range(len(snapshot.blocks)), key=lambda i: (snapshot.blocks[i].priority, i))
    for index in order:
        block = snapshot.blocks[index]
        if not block.text:
            reports[block.label] = BlockReport(block.label, block.priority, 0, 0, 0, "empty")
            continue
        whole = counter.count(renderer.section(block, block.text))

        def fits(text: str, block: Block = block, cap: int | None = least_lost) -> bool:
            if not text:
                return False
            within_priority = cap is None or counter.count(renderer.section(block, text)) <= cap
            return within_priority and cost(block.label, text) <= budget_tokens

        text = block.text if fits(block.text) else longest_prefix(block.text, fits)
        part = counter.count(renderer.section(block, text)) if text else 0
        status: Literal["kept", "cut", "dropped"] = "kept" if text == block.text else "cut" if text else "dropped"
        if text:
            kept[block.label] = text
        if status != "kept":
            lost = whole - part
            least_lost = lost if least_lost is None else min(least_lost, lost)
        reports[block.label] = BlockReport(block.label, block.priority, len(block.text), whole, part, status)
    persona = reports.get(snapshot.persona_block)
    if persona is not None and persona.status == "dropped":
        raise SnapshotError(
            f"a budget of {budget_tokens} tokens leaves no room for the persona block ({snapshot.persona_block}): "
            f"the system prompt and the blocks kept before it take {counter.count(renderer.system(snapshot, kept))} tokens; "
            "raise the budget (sequence_len) or give the persona block the first priority"
        )
    text = renderer.system(snapshot, kept)
    reported = tuple(reports[b.label] for b in snapshot.blocks)
    return ContextWindow("trimmed", text, counter.count(text), reported, kept)


def distilled_window(
    snapshot: Snapshot,
    counter: TokenCounter,
    tool_description: str,
    stub_tokens: int = 160,
    renderer: SystemRenderer = DIRECT,
) -> ContextWindow:
    """A persona stub (the persona block's opening, up to ``stub_tokens``, in complete sentences, never ending on a
    heading) and the tool description. Under a runtime that compiles its own system message (Letta), the stub is the
    persona block's value in that message and the agent's system text stays."""
    persona = next((b for b in snapshot.blocks if b.label == snapshot.persona_block), None)
    stub = longest_prefix(persona.text, lambda text: counter.count(text) <= stub_tokens) if persona else ""
    kept = {persona.label: stub} if persona and stub else {}
    direct = "\n\n".join([stub, tool_description]).strip()
    text = direct if renderer is DIRECT else renderer.system(snapshot, kept)
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
    return ContextWindow("distilled", text, counter.count(text), reports, kept)


def context_windows(
    snapshot: Snapshot,
    counter: TokenCounter,
    budget_tokens: int,
    tool_description: str,
    renderer: SystemRenderer = DIRECT,
) -> dict[str, ContextWindow]:
    """All three variants: full, trimmed to ``budget_tokens`` (SnapshotError when the system prompt alone is over
    it, or the persona block cannot be kept), distilled."""
    return {
        "full": full_window(snapshot, counter, renderer),
        "trimmed": trimmed_window(snapshot, counter, budget_tokens, renderer),
        "distilled": distilled_window(snapshot, counter, tool_description, renderer=renderer),
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
