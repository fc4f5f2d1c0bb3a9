"""Trainer helpers: commands in the trainer environment, a training run through the real assets, what it logged."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow

from void_pipeline.defs.external import OFFLINE
from void_pipeline.defs.train.assets import lora_adapter, merged_model
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer
from void_pipeline_tests.support.runs import value
from void_pipeline_tests.support.world import model_choice


def run_trainer(
    trainer_bin: Path, *args: str, cwd: Path | None = None, timeout: int = 600, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A command in the trainer environment (its bin first on PATH: axolotl starts `accelerate` from there)."""
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{trainer_bin}:{os.environ['PATH']}"}
    return subprocess.run(
        list(args),
        cwd=cwd or REPO_ROOT,
        env=env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def materialize(
    curated: dict[str, Any],
    tiny_model: Path | str,
    trainer_bin: Path,
    overrides: dict[str, Any],
    *,
    instance: dg.DagsterInstance | None = None,
    storage: PipelineStorage | None = None,
    assets: tuple[dg.AssetsDefinition, ...] = (lora_adapter,),
    choice: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Train (and merge) on the curated dataset with the tests' model choice, ``choice`` changing fields of it."""
    resources = {
        **curated["resources"],
        "model": model_choice(local_path=str(tiny_model), **(choice or {})),
        "trainer": Trainer(overrides=overrides, python=str(trainer_bin / "python")),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        **({"storage": storage} if storage else {}),
    }
    return dg.materialize(
        [*curated["assets"], lora_adapter, merged_model],
        selection=[a.key for a in assets],
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def mlflow_run(curated: dict[str, Any], dagster_run_id: str) -> Any:
    store = Path(curated["storage"].root) / "mlflow"
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["void-lora"], output_format="list")
    return next(r for r in runs if r.data.tags.get("dagster_run_id") == dagster_run_id)


@dataclass(frozen=True)
class Trained:
    instance: dg.DagsterInstance
    result: dg.ExecuteInProcessResult

    @property
    def adapter(self) -> Path:
        return Path(str(value(self.result.asset_materializations_for_node("lora_adapter")[0].metadata, "adapter_path")))


def dataset_sha256(folder: Path) -> str:
    """A chat dataset's hash recomputed here, by its documented recipe rather than by the code under test: sha256
    over each file a training run reads that exists, in this order, its name, a NUL byte, then its bytes."""
    digest = hashlib.sha256()
    for name in ("train.jsonl", "val.jsonl", "system_prompt.txt", "tools.json", "request.json"):
        if (folder / name).exists():
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()
