"""An axolotl plugin whose trainer callback writes every log and evaluation as data (runs in the trainer env).

Listed in the effective config (``plugins: [void_pipeline.external.axolotl_metrics.MetricsPlugin]``), it adds a
``transformers.TrainerCallback`` that appends one JSON line per ``on_log`` to ``$VOID_METRICS_PATH``:
``{"kind": "train" | "eval" | "summary", "step": <global step>, <every numeric value logged>}``, plus one
``{"kind": "setup", ...}`` line when training starts (packing efficiency, total steps, the step it resumes at).
The step is the trainer's own ``global_step``, so any ``logging_steps`` and a resume from a checkpoint number lines
correctly. ``train_lora`` forwards each line to Dagster as a Pipes message while training runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

METRICS_PATH_ENV = "VOID_METRICS_PATH"  # the same name as train_lora's (this module imports axolotl: kept apart)


def numeric(logs: dict[str, Any]) -> dict[str, float]:
    values = {}
    for key, value in logs.items():
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            continue
    return values


def kind_of(logs: dict[str, Any]) -> str | None:
    if "eval_loss" in logs:
        return "eval"
    if "loss" in logs:
        return "train"
    if "train_runtime" in logs:
        return "summary"
    return None


class MetricsCallback(TrainerCallback):  # type: ignore[misc]
    def __init__(self, path: Path, cfg: Any) -> None:
        self.path = path
        self.cfg = cfg

    def write(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            packing = getattr(self.cfg, "sample_packing_eff_est", None)
            self.write(
                {
                    "kind": "setup",
                    "step": int(state.global_step),
                    "max_steps": int(state.max_steps),
                    "packing_efficiency": float(packing) if packing else None,
                    "logging_steps": float(args.logging_steps),
                }
            )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kind = kind_of(logs or {})
        if kind is not None and state.is_world_process_zero:
            self.write({"kind": kind, "step": int(state.global_step), **numeric(logs or {})})


class MetricsPlugin(BasePlugin):  # type: ignore[misc]
    def add_callbacks_pre_trainer(self, cfg: Any, model: Any) -> list[Any]:
        path = os.environ.get(METRICS_PATH_ENV)
        return [MetricsCallback(Path(path), cfg)] if path else []
