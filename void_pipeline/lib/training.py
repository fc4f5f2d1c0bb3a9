"""Training runs on disk: fingerprints, run folders and their state, resumable checkpoints, checks before training,
and the loss history the external trainer writes.

Pure: no Dagster, no torch. A run folder ``train/<run>/`` holds ``axolotl.yml`` (the effective config),
``state.json`` (fingerprint, status, the Dagster runs that worked on it), ``metrics.jsonl`` (one line per logged
step or evaluation, appended by the trainer as it goes), ``adapter/`` (axolotl's output_dir with
``checkpoint-N/``), ``trainer.lock`` (held by the live trainer, naming its pid and Dagster run) and, after a
failure the trainer could explain, ``failure-<dagster run id>.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from void_pipeline.lib.files import write_text_atomic

# Keys that say where a run writes, not what it trains: two runs that differ only here are the same training.
PLACEMENT_KEYS = ("output_dir", "dataset_prepared_path", "resume_from_checkpoint")
DATASET_FILES = ("train.jsonl", "val.jsonl", "system_prompt.txt", "tools.json")
COMPLETE = "complete"


def dataset_hash(dataset_dir: Path) -> str:
    """sha256 over the files a training run reads from a chat dataset folder (names included)."""
    digest = hashlib.sha256()
    for name in DATASET_FILES:
        path = dataset_dir / name
        if not path.exists():
            continue
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def config_fingerprint(config: dict[str, Any], data_hash: str) -> str:
    """What is trained: the effective config without its placement keys, plus the data it reads."""
    what = {k: v for k, v in config.items() if k not in PLACEMENT_KEYS}
    for key in ("datasets", "test_datasets"):  # the data enters through its hash, not its path
        if key in what:
            what[key] = [{k: v for k, v in d.items() if k != "path"} for d in what[key]]
    payload = json.dumps(what, sort_keys=True, default=str) + data_hash
    return hashlib.sha256(payload.encode()).hexdigest()


def read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "state.json"
    if not path.exists():
        return {}
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def write_state(run_dir: Path, **changes: Any) -> dict[str, Any]:
    state = {**read_state(run_dir), **changes}
    write_text_atomic(run_dir / "state.json", json.dumps(state, indent=2))
    return state


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is written last, so a half-saved one is skipped)."""
    done = [
        p
        for p in output_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


@dataclass(frozen=True)
class Resumable:
    run_dir: Path
    checkpoint: Path

    @property
    def step(self) -> int:
        return checkpoint_step(self.checkpoint)


def find_resumable(train_root: Path, fingerprint: str) -> Resumable | None:
    """The newest unfinished run of the same training that left a checkpoint behind."""
    found = []
    for run_dir in train_root.glob("*/"):
        state = read_state(run_dir)
        if state.get("fingerprint") != fingerprint or state.get("status") == COMPLETE:
            continue
        checkpoint = last_checkpoint(run_dir / "adapter")
        if checkpoint is not None:
            found.append(Resumable(run_dir, checkpoint))
    return max(found, key=lambda r: r.checkpoint.stat().st_mtime, default=None)


# --- checks before training ----------------------------------------------------------------------------------


def looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).exists()


def trainable_rows(train_path: Path) -> tuple[int, int]:
    """(rows, rows with an assistant turn that has text or tool calls) of an OpenAI-format JSONL file."""
    rows = trainable = 0
    with train_path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            rows += 1
            messages = orjson.loads(line).get("messages") or []
            if any(m.get("role") == "assistant" and (m.get("content") or m.get("tool_calls")) for m in messages):
                trainable += 1
    return rows, trainable


def preflight_errors(config: dict[str, Any], dataset_dir: Path) -> list[str]:
    """Bad inputs that would waste a GPU job, found before the trainer starts (one message per problem)."""
    errors = []
    model = str(config.get("base_model", ""))
    if looks_like_path(model) and not (Path(model).expanduser() / "config.json").exists():
        errors.append(f"base model path {model} does not exist or holds no config.json (set VOID_BASE_MODEL_PATH)")
    train_path = dataset_dir / "train.jsonl"
    rows, trainable = trainable_rows(train_path) if train_path.exists() else (0, 0)
    if trainable == 0:
        errors.append(
            f"no trainable examples in {train_path}: {rows} rows, none with an assistant turn "
            "(materialize chat_dataset in the openai format, or check its filters and split)"
        )
    index, manifest = dataset_dir / "index.parquet", dataset_dir / "dataset.json"
    sequence_len = int(config.get("sequence_len") or 0)
    if rows and sequence_len and index.exists() and manifest.exists():
        system_tokens = int(json.loads(manifest.read_text()).get("system_tokens") or 0)
        lengths = pl.read_parquet(index).filter(pl.col("split") == "train")["tokens"] + system_tokens
        shortest = int(lengths.min() or 0) if lengths.len() else 0  # type: ignore[arg-type]
        if shortest > sequence_len:
            errors.append(
                f"sequence_len {sequence_len} is below every training example (shortest: {shortest} tokens "
                f"with the system prompt): raise sequence_len or use a shorter context strategy"
            )
    output_dir = Path(str(config.get("output_dir", "")))
    if output_dir.exists() and any(output_dir.iterdir()) and not config.get("resume_from_checkpoint"):
        errors.append(f"output directory collision: {output_dir} already holds files; an adapter is never overwritten")
    return errors


# --- history -------------------------------------------------------------------------------------------------


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Logged steps and evaluations, in order; a step logged again after a resume replaces the earlier line."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut short by a kill
        latest[(str(entry.get("kind")), int(entry.get("step", 0)))] = entry
    return sorted(latest.values(), key=lambda e: (int(e.get("step", 0)), e.get("kind") != "eval"))


def sparkline(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(bars[min(len(bars) - 1, int((v - low) / span * len(bars)))] for v in values)


def loss_svg(
    train: list[tuple[int, float]], evals: list[tuple[int, float]], width: int = 640, height: int = 320
) -> str:
    """A small line chart: training loss per step, validation loss as points (standalone SVG)."""
    points = train + evals
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    pad = 48
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    x0, x1 = min(steps), max(steps) or 1
    y0, y1 = min(losses), max(losses)
    y_span = (y1 - y0) or 1.0

    def xy(step: int, loss: float) -> tuple[float, float]:
        x = pad + (step - x0) / ((x1 - x0) or 1) * (width - 2 * pad)
        return round(x, 1), round(height - pad - (loss - y0) / y_span * (height - 2 * pad), 1)

    line = " ".join(f"{x},{y}" for x, y in (xy(s, v) for s, v in train))
    dots = "".join(f'<circle cx="{x}" cy="{y}" r="4" fill="#d9480f"/>' for x, y in (xy(s, v) for s, v in evals))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="12"><rect width="100%" height="100%" fill="white"/>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>'
        f'<text x="{pad}" y="{pad - 8}">loss {y1:.3f}</text><text x="{pad}" y="{height - pad + 16}">'
        f"step {x0}; low {y0:.3f}</text>"
        f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end">step {x1}</text>'
        f'<polyline fill="none" stroke="#1c7ed6" stroke-width="2" points="{line}"/>{dots}'
        f'<text x="{width - pad}" y="{pad - 8}" text-anchor="end">train (blue), validation (orange)</text></svg>'
    )
