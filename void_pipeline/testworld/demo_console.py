"""The demo's console: the story on the terminal (each stage as it starts, each asset as it ends with its key
numbers), and every line of the libraries, converters and servers it runs in one log file."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # dagster is imported where the demo materializes: `devnet up` starts without it
    import dagster as dg

# Per asset, the metadata entries that tell its story, with the words the console gives them (a missing one is
# left out).
KEY_NUMBERS: dict[str, tuple[tuple[str, str], ...]] = {
    "raw_records": (("fetched_this_run", "fetched"), ("rows_new", "new"), ("quarantined_this_run", "quarantined")),
    "context_window": (
        ("selected_strategy", "strategy"),
        ("tokens_full", "tokens in full"),
        ("tokens_distilled", "distilled"),
    ),
    "thread_context": (
        ("replies", "replies"),
        ("complete_share", "complete threads"),
        ("ancestors_fetched", "posts fetched"),
    ),
    "filtered_records": (("input_rows", "in"), ("rejected_rows", "removed")),
    "chat_dataset": (("train_examples", "train"), ("val_examples", "validation"), ("test_examples", "held out")),
    "lora_adapter": (("steps", "steps"), ("val_loss_before", "validation loss"), ("val_loss_after", "→")),
    "eval_generations": (("answers", "answers"), ("errors", "errors")),
    "eval_report": (("examples", "held-out threads"),),
    "served_model": (("bundle_version", "bundle"), ("smoke_latency_s", "smoke answer s")),
    "shadow_replies": (("turns", "turns"), ("answered_production", "served"), ("answered_candidate", "candidate")),
    "shadow_report": (("status", "status"), ("production_call_validity_share", "served call validity")),
}
# The evaluation's rows a newcomer reads first (report.md has them all); per-1,000 ones say so.
TABLE_ROWS = (
    "call_validity",
    "no_call",
    "invalid_call",
    "posts_per_answer",
    "post_length_mean",
    "authorship_pass_rate",
    "semantic_similarity",
    "empty_answer",
    "repetition_loop",
    "heldout_loss",
)
PER_1000 = {"character_sheet", "voice_break", "empty_answer", "repetition_loop", "over_length"}


@dataclass
class Terminal:
    """The terminal while the log holds the process's own output: ``out`` for the story, ``err`` for errors."""

    out: TextIO
    err: TextIO
    log_path: Path

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def fail(self, message: str, lines: int = 25) -> None:
        """The error, then the last lines of the log with its path."""
        print(message, file=self.err, flush=True)
        print(f"--- the last {lines} lines of {self.log_path} ---", file=self.err)
        print(log_tail(self.log_path, lines), file=self.err, flush=True)


def log_tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def output_to_log(log_path: Path) -> Iterator[Terminal]:
    """For the block, file descriptors 1 and 2 (this process's libraries and every child process they start,
    which inherit them) write to ``log_path``; ``print`` still reaches the terminal. An exception leaving the block
    puts the log's last lines on the terminal before it goes on."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    out = open(os.dup(saved_out), "w", buffering=1, encoding="utf-8")  # noqa: SIM115 (closed below)
    err = open(os.dup(saved_err), "w", buffering=1, encoding="utf-8")  # noqa: SIM115
    previous_stdout = sys.stdout
    terminal = Terminal(out, err, log_path)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.stdout = out
    try:
        yield terminal
    except BaseException as error:
        if not isinstance(error, KeyboardInterrupt | SystemExit):
            terminal.fail(f"[demo] stopped by {type(error).__name__}: {error}")
        raise
    finally:
        sys.stdout = previous_stdout
        with contextlib.suppress(ValueError):
            sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err):
            os.close(fd)
        out.close()
        err.close()


def key_numbers(asset: str, metadata: Mapping[str, Any]) -> str:
    """The asset's key numbers, ``words value`` each, from its materialization's metadata."""
    parts: list[str] = []
    for name, words in KEY_NUMBERS.get(asset, ()):
        entry = metadata.get(name)
        if entry is None:
            continue
        value = getattr(entry, "value", entry)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        if isinstance(value, float):
            text = f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = value if len(value) <= 40 else value[:37] + "..."
        if words == "→" and parts:  # the same number after: "validation loss 4.24 → 2.27"
            parts[-1] += f" → {text}"
        else:
            parts.append(f"{words} {text}")
    return ", ".join(parts)


class Story:
    """A run's events, told on the terminal as they arrive: each stage as its first step starts, each asset as it
    is materialized (its stage, how long its step took, its key numbers), each step that fails."""

    def __init__(self, terminal: Terminal, groups: Mapping[str, str]) -> None:
        self.terminal = terminal
        self.groups = groups  # asset name → group (the stage)
        self.stages: set[str] = set()
        self.started: dict[str, float] = {}

    def tell(self, event: dg.DagsterEvent) -> None:
        if event.step_key is None:
            return
        step, kind = event.step_key, event.event_type_value
        stage = self.groups.get(step, "")
        took = time.monotonic() - self.started.get(step, time.monotonic())
        if kind == "STEP_START":
            self.started[step] = time.monotonic()
            if stage and stage not in self.stages:  # an asset's step (a check's has no stage)
                self.stages.add(stage)
                self.terminal.say(f"[demo] {stage}: starting ({step})")
        elif kind == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            asset = materialization.asset_key.to_user_string()
            partition = f" [{materialization.partition}]" if materialization.partition else ""
            numbers = key_numbers(asset, materialization.metadata)
            line = f"  {stage:<8} {asset}{partition} ({took:.0f} s)"
            self.terminal.say(line + (f": {numbers}" if numbers else ""))
        elif kind == "STEP_FAILURE":
            self.terminal.say(f"  {stage or 'check':<8} {step} FAILED after {took:.0f} s")


def evaluation_table(report: Mapping[str, Any]) -> str:
    """The headline rows of an evaluation report (its ``report.json``): base, tuned and the real replies, with the
    95% intervals where the report has them."""
    from void_pipeline.lib.evaluate.report import DESCRIPTIVE, LOWER_IS_BETTER, REAL

    scores, intervals = report.get("scores", {}), report.get("intervals", {})
    columns = [name for name in ("base", "tuned", REAL) if name in scores]
    rows = []
    for metric in TABLE_ROWS:
        if not any(metric in scores[c] for c in columns):
            continue
        arrow = "" if metric in DESCRIPTIVE else " ↓" if metric in LOWER_IS_BETTER else " ↑"
        unit = " per 1,000" if metric in PER_1000 else ""
        cells = []
        for column in columns:
            value = scores[column].get(metric)
            per_1000 = metric in PER_1000  # counts of answers: whole numbers
            text = "-" if value is None or value != value else f"{value:,.0f}" if per_1000 else _number(float(value))
            interval = intervals.get(column, {}).get(metric)
            if text != "-" and interval and all(v == v for v in interval):
                text += f" [{_number(interval[0])}, {_number(interval[1])}]"
            cells.append(text)
        rows.append([f"{metric}{unit}{arrow}", *cells])
    header = ["metric", *columns]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
