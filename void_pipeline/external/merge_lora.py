"""Merge a LoRA adapter into its base model with `axolotl merge-lora`, reporting through Pipes (trainer env).

Extras from the asset: ``config`` (the run's effective axolotl config), ``adapter``, ``run_dir``. axolotl writes
``<output-dir>/merged``; the merge goes to a scratch folder first and is renamed to the run's ``merged/`` only
when complete, so a killed merge never leaves a half-written model where vLLM would load it.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from dagster_pipes import PipesContext

from void_pipeline.external.train_lora import fail, guarded_main, lock_run_folder, stream
from void_pipeline.lib.layout import RunPaths


def merge(pipes: PipesContext, config: Path, adapter: Path, run: RunPaths, failure_path: Path) -> int:
    if lock_run_folder(pipes, run, failure_path, f"merging, Dagster run {pipes.run_id}") is None:
        return 3
    target = run.merged
    scratch = target.with_name(f".{target.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    command = [
        str(Path(sys.executable).parent / "axolotl"),
        "merge-lora",
        str(config),
        f"--lora-model-dir={adapter}",
        f"--output-dir={scratch}",
    ]
    pipes.log.info(f"starting: {' '.join(command)}")
    started = time.monotonic()

    def on_line(line: str) -> None:
        if "merged model to" in line or "Merging" in line:
            pipes.log.info(line.strip())

    code, tail = stream(command, on_line)
    merged = scratch / "merged"
    if code != 0 or not (merged / "config.json").exists():
        return fail(
            pipes, failure_path, "merge", [f"axolotl merge-lora exited with code {code}; last lines:", *tail[-20:]]
        )
    if target.exists():  # an earlier merge of the same adapter: replace it whole
        shutil.rmtree(target)
    merged.rename(target)
    shutil.rmtree(scratch, ignore_errors=True)
    weights = sorted(target.glob("*.safetensors"))
    pipes.report_asset_materialization(
        metadata={
            "merged_path": {"raw_value": str(target), "type": "path"},
            "weights_bytes": sum(p.stat().st_size for p in weights),
            "weight_files": len(weights),
            "merge_seconds": round(time.monotonic() - started, 1),
        }
    )
    return 0


def main() -> None:
    guarded_main(
        lambda pipes: merge(
            pipes,
            Path(str(pipes.get_extra("config"))),
            Path(str(pipes.get_extra("adapter"))),
            RunPaths(Path(str(pipes.get_extra("run_dir")))),
            Path(str(pipes.get_extra("failure_path"))),
        )
    )


if __name__ == "__main__":
    main()
