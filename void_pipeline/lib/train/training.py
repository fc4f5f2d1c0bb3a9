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
from void_pipeline.lib.layout import DatasetPaths, RunPaths, TrainPaths
from void_pipeline.lib.plots import png_figure

# Keys that say where a run writes, not what it trains: two runs that differ only here are the same training.
PLACEMENT_KEYS = ("output_dir", "dataset_prepared_path", "resume_from_checkpoint")
COMPLETE = "complete"


def dataset_hash(dataset_dir: Path) -> str:
    """sha256 over the files a training run reads from a chat dataset folder (names included; request.json says
    whether the system prompt is added to every row)."""
    digest = hashlib.sha256()
    files = DatasetPaths(dataset_dir)
    for path in (files.split("train"), files.split("val"), files.system_prompt, files.tools, files.request):
        if not path.exists():
            continue
        digest.update(path.name.encode() + b"\0")
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


def read_state(run: RunPaths) -> dict[str, Any]:
    path = run.state
    if not path.exists():
        return {}
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def write_state(run: RunPaths, **changes: Any) -> dict[str, Any]:
    state = {**read_state(run), **changes}
    write_text_atomic(run.state, json.dumps(state, indent=2))
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
    run: RunPaths
    checkpoint: Path

    @property
    def step(self) -> int:
        return checkpoint_step(self.checkpoint)


def find_resumable(train: TrainPaths, fingerprint: str) -> Resumable | None:
    """The newest unfinished run of the same training that left a checkpoint behind."""
    found = []
    for run in train.runs():
        state = read_state(run)
        if state.get("fingerprint") != fingerprint or state.get("status") == COMPLETE:
            continue
        checkpoint = last_checkpoint(run.adapter)
        if checkpoint is not None:
            found.append(Resumable(run, checkpoint))
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
    files = DatasetPaths(dataset_dir)
    train_path = files.split("train")
    rows, trainable = trainable_rows(train_path) if train_path.exists() else (0, 0)
    if trainable == 0:
        errors.append(
            f"no trainable examples in {train_path}: {rows} rows, none with an assistant turn "
            "(materialize chat_dataset in the openai format, or check its filters and split)"
        )
    index, manifest = files.index, files.manifest
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


def read_metrics(run: RunPaths) -> list[dict[str, Any]]:
    """Logged steps and evaluations, in order; a step logged again after a resume replaces the earlier line."""
    path = run.metrics
    if not path.exists():
        return []
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut short by a kill
        if entry.get("kind") == "setup":
            continue  # what a training attempt started with, not a point of its history
        latest[(str(entry.get("kind")), int(entry.get("step", 0)))] = entry
    return sorted(latest.values(), key=lambda e: (int(e.get("step", 0)), e.get("kind") != "eval"))


def sparkline(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(bars[min(len(bars) - 1, int((v - low) / span * len(bars)))] for v in values)


def loss_png(train: list[tuple[int, float]], evals: list[tuple[int, float]], path: Path) -> Path:
    """Training loss per logged step and validation loss as points, a PNG written atomically (matplotlib)."""
    with png_figure(path, figsize=(6.4, 3.2), dpi=100) as (_, axes):
        if train:
            axes.plot([s for s, _ in train], [v for _, v in train], color="#1c7ed6", label="training loss")
        if evals:
            axes.plot([s for s, _ in evals], [v for _, v in evals], "o", color="#d9480f", label="validation loss")
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.grid(alpha=0.3)
        if train or evals:
            axes.legend()
    return path


@dataclass(frozen=True)
class History:
    """A run's logged steps and evaluations, split for metadata, plots and MLflow."""

    entries: list[dict[str, Any]]

    @property
    def train(self) -> list[tuple[int, float]]:
        return [(int(e["step"]), float(e["loss"])) for e in self.entries if e["kind"] == "train"]

    @property
    def evals(self) -> list[tuple[int, float]]:
        return [(int(e["step"]), float(e["eval_loss"])) for e in self.entries if e["kind"] == "eval"]

    @property
    def summary(self) -> dict[str, Any]:
        found: dict[str, Any] = next((e for e in reversed(self.entries) if e["kind"] == "summary"), {})
        return {k: v for k, v in found.items() if k != "step"}

    def curve_markdown(self) -> str:
        """Sparkline, first → last logged step, the evaluations and a table of the logged steps."""
        train = self.train
        if not train:
            return "_no steps reported_"
        evals = "\n".join(f"- step {s}: validation loss {v:.4f}" for s, v in self.evals) or "_no validation split_"
        rows = [
            "| step | loss | learning_rate | grad_norm |",
            "| --- | --- | --- | --- |",
            *(
                f"| {e['step']} | {e['loss']:.4f} | {e.get('learning_rate', float('nan')):.3g} | "
                f"{e.get('grad_norm', float('nan')):.3g} |"
                for e in self.entries
                if e["kind"] == "train"
            ),
        ]
        head = f"`{sparkline([v for _, v in train])}` training loss, step {train[0][0]} → {train[-1][0]}"
        return f"{head}\n\n{evals}\n\n" + "\n".join(rows[:52])
