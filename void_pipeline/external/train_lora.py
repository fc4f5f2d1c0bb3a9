"""Train a LoRA adapter with axolotl, reporting to Dagster through Pipes (runs in the trainer environment).

Extras from the asset: ``config`` (the effective axolotl config file), ``output_dir``. Every step's metrics that
axolotl prints (``{'loss': ..., 'learning_rate': ..., ...}``) go back as a Pipes custom message and a log line;
the adapter is reported as the asset's materialization. The same script runs as a subprocess locally or in a
GPU container/pod in production.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

METRICS = re.compile(r"\{'(?:loss|eval_loss|train_runtime)'[^{}]*\}")


def parse_metrics(line: str) -> list[dict[str, Any]]:
    """axolotl/transformers print metric dicts with string values; return them as numbers where they are."""
    found = []
    for match in METRICS.finditer(line):
        try:
            raw = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            continue
        metrics = {}
        for key, value in raw.items():
            try:
                metrics[key] = float(value)
            except (TypeError, ValueError):
                continue
        found.append(metrics)
    return found


def train(pipes: PipesContext, config: Path, output_dir: Path) -> int:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(Path(sys.executable).parent / "axolotl"), "train", str(config)]
    pipes.log.info(f"starting: {' '.join(command)}")
    started = time.monotonic()
    step = 0
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        tail = [*tail[-40:], line.rstrip()]
        for metrics in parse_metrics(line):
            if "loss" in metrics:
                step += 1
                metrics["step"] = step
                pipes.report_custom_message({"kind": "train", **metrics})
                pipes.log.info(f"step {step}: loss {metrics['loss']:.4f}, lr {metrics.get('learning_rate', 0):.2e}")
            elif "eval_loss" in metrics:
                pipes.report_custom_message({"kind": "eval", "step": step, **metrics})
                pipes.log.info(f"eval at step {step}: loss {metrics['eval_loss']:.4f}")
            else:
                pipes.report_custom_message({"kind": "summary", **metrics})
    code = process.wait()
    if code != 0:
        pipes.log.error("axolotl train failed; last lines:\n" + "\n".join(tail))
        return code
    adapter = output_dir / "adapter_model.safetensors"
    pipes.report_asset_materialization(
        metadata={
            "adapter_path": {"raw_value": str(output_dir), "type": "path"},
            "adapter_bytes": adapter.stat().st_size if adapter.exists() else 0,
            "steps": step,
            "train_seconds": round(time.monotonic() - started, 1),
        }
    )
    return 0


def main() -> None:
    with open_dagster_pipes() as pipes:
        config = Path(str(pipes.get_extra("config")))
        output_dir = Path(str(pipes.get_extra("output_dir")))
        code = train(pipes, config, output_dir)
    sys.exit(code)


if __name__ == "__main__":
    main()
