"""What curation shows in the UI: plain values (defs/metadata.as_metadata shows them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from void_pipeline.lib.curate.context import ContextWindow, Snapshot
from void_pipeline.lib.curate.dataset import DELETED_UPSTREAM, TokenReport, TurnStats, WrittenDataset, leaked_roots
from void_pipeline.lib.curate.request import RequestProfile
from void_pipeline.lib.handoffs import ContextWindowReport
from void_pipeline.lib.report import Markdown, counts_table, fenced, markdown_table

SYSTEM_SHOWN = 1500  # characters of the chosen system message the UI shows (the variant file has all of it)


def context_metadata(
    report: ContextWindowReport,
    snapshot: Snapshot,
    windows: dict[str, ContextWindow],
    profile: RequestProfile,
    drift: str | None,
    folder: Path,
) -> dict[str, Any]:
    chosen = windows[report.selected].text
    cut = "\n\n_(cut here for the UI; the whole text is in the variant file)_" if len(chosen) > SYSTEM_SHOWN else ""
    blocks = pl.DataFrame([b.__dict__ for b in windows["trimmed"].blocks])
    return {
        "selected_strategy": report.selected,
        **{f"tokens_{name}": w.tokens for name, w in windows.items()},
        "trimmed_budget_tokens": report.budget_tokens,
        "exact_token_counts": report.exact_tokens,
        "tokenizer": report.tokenizer,
        "blocks_trimmed": Markdown(markdown_table(blocks, rows=len(blocks))),
        "runtime": report.runtime,
        "agent_type": report.agent_type or "(snapshot folder)",
        "tools_offered": ", ".join(profile.tool_names()),
        "system_message": Markdown(fenced(chosen[:SYSTEM_SHOWN]) + cut),
        "snapshot_date": snapshot.snapshot_date.isoformat(),
        "snapshot_warnings": Markdown("\n".join(f"- {w}" for w in snapshot.warnings) or "_none_"),
        "records_older_than_snapshot": Markdown(drift or "_no posts exported yet_"),
        "path": folder,
    }


def sample_markdown(kept: pl.DataFrame) -> Markdown:
    """The first training example as the model sees it: the user message, and the reply calls it learns."""
    sample = kept.filter(pl.col("split") == "train").head(1).to_dicts()
    if not sample:
        return Markdown("_no examples_")
    calls = json.dumps([{"text": c} for c in sample[0]["calls"]], indent=2, ensure_ascii=False)
    return Markdown(f"**user**\n\n{fenced(sample[0]['prompt'])}\n\n**assistant tool calls**\n\n{fenced(calls, 'json')}")


def deleted_markdown(turns: TurnStats) -> str:
    """The first examples dropped because a post they show or answer with is gone upstream."""
    if not turns.deleted:
        return "_none: no example shows a deleted post_"
    rows = pl.DataFrame(turns.deleted, schema=["example", "gone post", "reason"], orient="row")
    more = turns.skipped[DELETED_UPSTREAM] - len(turns.deleted)
    return markdown_table(rows, rows=len(rows)) + (f"\n\n_and {more:,} more_" if more > 0 else "")


def dataset_metadata(
    written: WrittenDataset, kept: pl.DataFrame, turns: TurnStats, tokens: TokenReport, fmt: str, folder: Path
) -> dict[str, Any]:
    sizes = written.sizes
    examples_total = sum(n for n, _ in sizes.values())
    bytes_total = sum(b for _, b in sizes.values())
    tokens_md = markdown_table(pl.DataFrame([{"split": s, **v} for s, v in tokens.per_split.items()]))
    epoch_md = counts_table(tokens.epoch_tokens_by_strategy, key="context strategy", value="training tokens / epoch")
    return {
        "dagster/row_count": examples_total,
        **{f"{split}_examples": n for split, (n, _) in sizes.items()},
        "turns": turns.turns,
        "posts_in_turns": turns.posts_in_turns,
        "skipped": Markdown(counts_table(dict(turns.skipped))),
        "deleted_upstream": Markdown(deleted_markdown(turns)),
        "over_sequence_len_dropped": tokens.over_length,
        "bytes_per_example": round(bytes_total / max(examples_total, 1)),
        "dataset_bytes": bytes_total,
        "copy_prompt_layout_bytes": written.copy_prompt_bytes,
        "tokens_per_split": Markdown(tokens_md),
        "training_tokens_per_epoch": Markdown(epoch_md),
        "exact_token_counts": tokens.exact,
        "leaked_thread_roots": len(leaked_roots(kept)),
        "format": fmt,
        "path": folder,
        "sample": sample_markdown(kept),
    }
