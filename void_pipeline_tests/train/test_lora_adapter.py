"""lora_adapter as a Dagster asset: real axolotl through Pipes, metrics in Dagster and MLflow, a new folder per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import mlflow

from void_pipeline.defs.train.assets import lora_adapter
from void_pipeline.resources.model import BaseModel
from void_pipeline.resources.trainer import Trainer


def materialize_adapter(
    curated: dict[str, Any], tiny_model: Path, trainer_bin: Path, instance: dg.DagsterInstance | None = None
) -> dg.ExecuteInProcessResult:
    resources = {
        **curated["resources"],
        "base_model": BaseModel(local_path=str(tiny_model), sequence_len=2048),
        "trainer": Trainer(
            overlays=["cpu-tiny"], overrides={"max_steps": 4, "save_steps": 2}, python=str(trainer_bin / "python")
        ),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
    return dg.materialize(
        [*curated["assets"], lora_adapter], selection=[lora_adapter.key], resources=resources, instance=instance
    )


def test_the_adapter_trains_through_pipes_and_lands_in_mlflow(
    curated: dict[str, Any], tiny_model: Path, trainer_bin: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_adapter(curated, tiny_model, trainer_bin, instance)
    assert result.success
    meta = result.asset_materializations_for_node("lora_adapter")[0].metadata
    adapter = Path(str(meta["adapter_path"].value))
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0 and meta["steps"].value == 4
    assert meta["base_model"].value == str(tiny_model) and "| 4 |" in str(meta["loss_curve"].value)
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("step 4: loss" in m for m in messages)  # the external process's progress, in Dagster's log

    store = Path(curated["storage"].root) / "mlflow"
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["void-lora"], output_format="list")
    run = next(r for r in runs if r.data.tags.get("dagster_run_id") == result.run_id)
    assert run.data.params["base_model"] == str(tiny_model) and run.data.params["max_steps"] == "4"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts

    again = materialize_adapter(curated, tiny_model, trainer_bin)
    second = Path(str(again.asset_materializations_for_node("lora_adapter")[0].metadata["adapter_path"].value))
    assert second != adapter and adapter.exists()  # a new folder per run; the earlier adapter is kept
