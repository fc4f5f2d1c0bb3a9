"""Train a LoRA adapter with axolotl, reporting to Dagster through Pipes (runs in the trainer environment).

Extras from the asset: ``config`` (the effective axolotl config file), ``run_dir``, ``output_dir``, ``start_step``
(the checkpoint's step when resuming) and ``accelerator`` (cuda | cpu, what the config was made for). On cuda the GPU
is checked first (lib/train/gpu_memory.py): no GPU, or too little memory for the base, is one line before anything
loads. Then two stages, each a process of its own:

1. ``prepare_data``: axolotl's config validation, the base model, and the tokenized datasets (zero trainable
   examples stop here, before any training);
2. ``axolotl train``: every metric dict it prints (``{'loss': ..., 'learning_rate': ..., ...}``) goes back as a
   Pipes custom message and a log line, and is appended to the run's ``metrics.jsonl`` so that the history
   survives a killed run.

A failure writes ``failure_path`` ({stage, errors}, one file per Dagster run) for the asset to raise with. The same
script runs as a subprocess locally or in a GPU container/pod in production.

Nothing outlives the run: the trainer holds the run folder's lock (``trainer.lock``, naming its pid) for as long
as it or its process group lives, so a second trainer refuses the folder; each stage runs in a process group under
a guard (lib/processes.py) that stops it when this process ends; and this process stops itself (SIGTERM) as soon
as the step that started it, or the Dagster run worker (``watch_pids``), is gone.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from dagster_pipes import PipesContext, open_dagster_pipes

from void_pipeline.lib.accelerator import gpu_memory_mib
from void_pipeline.lib.files import Busy, OwnerLock, acquire_owner, write_text_atomic
from void_pipeline.lib.layout import RunPaths
from void_pipeline.lib.processes import exit_when_gone, pid_alive, spawn_group, stop_group
from void_pipeline.lib.train.gpu_memory import training_fit

METRICS_PATH_ENV = "VOID_METRICS_PATH"  # where the trainer's callback appends (external/axolotl_metrics.py)
# The run folder's lock, held for the life of this process (a lock object that is garbage collected is released);
# every stage's guard inherits its fd too, so the lock outlives a kill of this process until the group is stopped.
HELD: list[OwnerLock] = []


def stream(
    command: list[str], on_line: Callable[[str], None], extra_env: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    """Run a command in a guarded process group (stopped when we end), with the trainer's bin first on PATH
    (axolotl starts `accelerate` from there)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(extra_env or {})
    process = spawn_group(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        pass_fds=tuple(lock.fd for lock in HELD),
    )
    assert process.stdout is not None
    tail: list[str] = []
    try:
        for line in process.stdout:
            tail = [*tail[-40:], line.rstrip()]
            on_line(line)
        return process.wait(), tail
    finally:
        stop_group(process)  # a no-op when it ended by itself; on SIGTERM to us, stops the whole group


class MetricsForwarder(threading.Thread):
    """Follows ``metrics.jsonl`` as the trainer's callback appends to it (axolotl_metrics.py): each new entry
    goes to Dagster as a Pipes message and a log line. Entries of earlier attempts (before a resume) are skipped."""

    def __init__(self, pipes: PipesContext, path: Path) -> None:
        super().__init__(name="metrics-forwarder", daemon=True)
        self.pipes, self.path = pipes, path
        self.offset = path.stat().st_size if path.exists() else 0
        self.entries: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.drain()

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=10)
        self.drain()

    def drain(self) -> None:
        with self.lock:
            if not self.path.exists():
                return
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next round
            self.offset += len(complete)
            for line in complete.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                self.entries.append(entry)
                self.forward(entry)

    def forward(self, entry: dict[str, Any]) -> None:
        kind, step = entry.get("kind"), entry.get("step")
        if kind == "train":
            lr = float(entry.get("learning_rate", 0.0))
            self.pipes.log.info(f"step {step}: loss {float(entry['loss']):.4f}, lr {lr:.2e}")
        elif kind == "eval":
            self.pipes.log.info(f"validation at step {step}: loss {float(entry['eval_loss']):.4f}")
        elif kind == "setup":
            self.pipes.log.info(
                f"training to step {entry.get('max_steps')} from step {step}; "
                f"packing efficiency {entry.get('packing_efficiency')}"
            )
        self.pipes.report_custom_message(entry)


def fail(pipes: PipesContext, failure_path: Path, stage: str, errors: list[str]) -> int:
    write_text_atomic(failure_path, json.dumps({"stage": stage, "errors": errors}, indent=2))
    pipes.log.error(f"{stage} failed: " + "\n".join(errors))
    return 2


def on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through stream(), which stops the running stage's group


def lock_run_folder(pipes: PipesContext, run: RunPaths, failure_path: Path, purpose: str) -> OwnerLock | None:
    """The run folder's lock, or None after reporting who holds it. A dead holder's lock is taken over."""
    try:
        lock = acquire_owner(run.lock, purpose, f"run folder {run.root}")
    except Busy as err:
        fail(pipes, failure_path, "lock", [str(err)])
        return None
    if lock.took_over_from and not pid_alive(lock.took_over_from):
        pipes.log.info(f"took the run folder over from pid {lock.took_over_from}, which is no longer running")
    HELD.append(lock)
    return lock


def guarded_main(body: Callable[[PipesContext], int]) -> None:
    """Pipes, SIGTERM handling and the parent watch shared by the trainer's entry points."""
    signal.signal(signal.SIGTERM, on_sigterm)
    with open_dagster_pipes() as pipes:
        exit_when_gone([int(pid) for pid in pipes.get_extra("watch_pids") or []])
        code = body(pipes)
    sys.exit(code)


def prepare(pipes: PipesContext, config: Path, failure_path: Path) -> dict[str, Any] | None:
    pipes.log.info("checking the config and the base model; tokenizing the datasets")
    command = [sys.executable, "-m", "void_pipeline.external.prepare_data", str(config)]
    code, tail = stream(command, lambda _line: None)
    result: dict[str, Any] | None = next((json.loads(line) for line in reversed(tail) if line.startswith("{")), None)
    if result is None:
        fail(pipes, failure_path, "prepare", [f"exit code {code}; last lines:", *tail[-15:]])
        return None
    if not result["ok"]:
        fail(pipes, failure_path, result["stage"], result["errors"])
        return None
    train = result["train"]
    pipes.log.info(
        f"train split: {train['rows']} rows, {train['tokens']} tokens, {train['trainable_tokens']} trainable; "
        f"{result['source_rows'] - train['rows']} examples dropped by axolotl (longer than sequence_len)"
    )
    pipes.report_custom_message({"kind": "data", **result})
    return result


def gpu_fits(pipes: PipesContext, config: Path, failure_path: Path) -> bool:
    """The GPU is there and holds the base for QLoRA (else the failure file says so, in one line)."""
    fits, line = training_fit(str(yaml.safe_load(config.read_text())["base_model"]), gpu_memory_mib())
    if not fits:
        fail(pipes, failure_path, "gpu", [line])
    else:
        pipes.log.info(line)
    return fits


def train(
    pipes: PipesContext,
    config: Path,
    run: RunPaths,
    output_dir: Path,
    start_step: int,
    failure_path: Path,
    accelerator: str = "cpu",
) -> int:
    if accelerator == "cuda" and not gpu_fits(pipes, config, failure_path):
        return 2
    if lock_run_folder(pipes, run, failure_path, f"training, Dagster run {pipes.run_id}") is None:
        return 3
    data = prepare(pipes, config, failure_path)
    if data is None:
        return 2
    command = [str(Path(sys.executable).parent / "axolotl"), "train", str(config)]
    pipes.log.info(f"starting: {' '.join(command)}" + (f" (resuming at step {start_step})" if start_step else ""))
    started = time.monotonic()
    metrics_path = run.metrics
    forwarder = MetricsForwarder(pipes, metrics_path)
    forwarder.start()
    try:
        code, tail = stream(command, lambda _line: None, {METRICS_PATH_ENV: str(metrics_path)})
    finally:
        forwarder.finish()
    if code != 0:
        return fail(pipes, failure_path, "train", [f"axolotl train exited with code {code}; last lines:", *tail[-20:]])
    entries = forwarder.entries
    steps = [e for e in entries if e["kind"] == "train"]
    setup = next((e for e in entries if e["kind"] == "setup"), {})
    final_step = max((int(e["step"]) for e in entries if e["kind"] != "setup"), default=start_step)
    adapter = output_dir / "adapter_model.safetensors"
    speeds = [s["tokens/train_per_sec_per_gpu"] for s in steps if "tokens/train_per_sec_per_gpu" in s]
    gpu_peak = max((s.get("memory/max_allocated (GiB)", 0.0) for s in steps), default=0.0)
    rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB → GiB, the largest child
    pipes.report_asset_materialization(
        metadata={
            "adapter_path": {"raw_value": str(output_dir), "type": "path"},
            "adapter_bytes": adapter.stat().st_size if adapter.exists() else 0,
            "steps": final_step,
            "resumed_at_step": start_step,
            "train_seconds": round(time.monotonic() - started, 1),
            "tokens_per_second": round(sum(speeds) / len(speeds), 1) if speeds else 0.0,
            "packing_efficiency": setup.get("packing_efficiency") or float("nan"),
            "peak_gpu_memory_gib": round(gpu_peak, 2),
            "peak_trainer_rss_gib": round(rss_gib, 2),
            "train_rows": data["train"]["rows"],
            "train_trainable_tokens": data["train"]["trainable_tokens"],
            "val_rows": data["eval"]["rows"],
        }
    )
    return 0


def main() -> None:
    guarded_main(
        lambda pipes: train(
            pipes,
            Path(str(pipes.get_extra("config"))),
            RunPaths(Path(str(pipes.get_extra("run_dir")))),
            Path(str(pipes.get_extra("output_dir"))),
            int(pipes.get_extra("start_step") or 0),
            Path(str(pipes.get_extra("failure_path"))),
            str(pipes.get_extra("accelerator") or "cpu"),
        )
    )


if __name__ == "__main__":
    main()
