"""Small renderings of data for people: markdown tables for asset metadata and logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl


def cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def markdown_table(frame: pl.DataFrame, columns: list[str] | None = None, rows: int = 5, width: int = 80) -> str:
    """The first ``rows`` rows of ``columns`` as a markdown table, long cells cut to ``width`` characters."""
    columns = columns or frame.columns
    head = frame.select(columns).head(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in head.iter_rows():
        lines.append("| " + " | ".join(cell(v, width) for v in row) + " |")
    if frame.height > rows:
        lines.append(f"\n_{rows} of {frame.height:,} rows_")
    return "\n".join(lines)


def counts_table(counts: dict[str, int], key: str = "reason", value: str = "count") -> str:
    if not counts:
        return "_none_"
    lines = [f"| {key} | {value} |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


class Markdown(str):
    """Metadata text that the UI renders as markdown (the stage's metadata functions return plain values: a Path is
    shown as a path, a dict or list as JSON, a Markdown or Url as what it says, anything else as itself)."""


class Url(str):
    """Metadata text that the UI shows as a link."""


@dataclass(frozen=True)
class Table:
    """Metadata rows that the UI shows as a table, every row of ``frame`` (keep it short, its text cells cut)."""

    frame: pl.DataFrame


def fenced(text: str, language: str = "") -> Markdown:
    return Markdown(f"```{language}\n{text}\n```")
