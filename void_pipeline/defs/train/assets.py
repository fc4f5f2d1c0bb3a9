"""lora_adapter: axolotl QLoRA on the chat dataset, run outside the orchestrator through Dagster Pipes."""

import re
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import polars as pl

from void_pipeline.defs.agent import agent_identity
from void_pipeline.defs.curate.assets import chat_dataset
from void_pipeline.lib.axolotl_config import effective_config, write
from void_pipeline.lib.paths import REPO_ROOT
from void_pipeline.lib.report import markdown_table
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.model import BaseModel
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
}
LOGGED_PARAMS = (
    "base_model",
    "adapter",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "sequence_len",
    "sample_packing",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "num_epochs",
    "max_steps",
    "optimizer",
    "lr_scheduler",
)


@dg.asset(
    deps=[chat_dataset],
    group_name="train",
    kinds={"axolotl", "pytorch", "mlflow"},
    pool="gpu",
    description="A LoRA adapter trained by axolotl (QLoRA) on chat_dataset; every run gets its own folder.",
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    endpoint: AtprotoEndpoint,
    storage: PipelineStorage,
    base_model: BaseModel,
    trainer: Trainer,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    did = agent_identity(endpoint, storage).did
    dataset = storage.curate(did) / "chat_dataset" / "openai"
    train_path = dataset / "train.jsonl"
    if not train_path.exists() or not train_path.read_text().strip():
        raise dg.Failure(f"no training examples in {train_path}: materialize chat_dataset (openai format) first")
    run_dir = storage.repo(did).root / "train" / context.run.run_id
    if run_dir.exists():
        raise dg.Failure(f"{run_dir} exists already: an adapter is never written over an earlier one")
    output_dir = run_dir / "adapter"
    extra: dict[str, Any] = {
        "dataset_prepared_path": str(run_dir / "prepared"),
        "default_system_message": (dataset / "system_prompt.txt").read_text(),
        **trainer.overrides,
    }
    config = effective_config(
        trainer.config, trainer.overlays, base_model.local_path or base_model.name, train_path, output_dir, extra
    )
    config_path = write(config, run_dir / "axolotl.yml")
    context.log.info(f"training {trainer.config} (+{trainer.overlays}) on {train_path}; config {config_path}")
    invocation = pipes_subprocess_client.run(
        context=context,
        command=[trainer.interpreter(), "-m", "void_pipeline.external.train_lora"],
        extras={"config": str(config_path), "output_dir": str(output_dir)},
        env={**OFFLINE, "PYTHONPATH": str(REPO_ROOT)},
        cwd=str(run_dir),
    )
    messages = [m for m in invocation.get_custom_messages() if isinstance(m, dict)]
    steps = [m for m in messages if m.get("kind") == "train"]
    reported = invocation.get_materialize_result()
    mlflow_url = log_to_mlflow(storage, context.run.run_id, config, config_path, output_dir, steps, messages)
    curve = pl.DataFrame([{k: m.get(k) for k in ("step", "loss", "learning_rate", "grad_norm")} for m in steps])
    losses = markdown_table(curve, rows=50) if steps else "_no steps reported_"
    return dg.MaterializeResult(
        metadata={
            **(reported.metadata or {}),
            "base_model": config["base_model"],
            "config": trainer.config,
            "overlays": ", ".join(trainer.overlays) or "none",
            "final_loss": steps[-1]["loss"] if steps else float("nan"),
            "loss_curve": dg.MetadataValue.md(losses),
            "effective_config": dg.MetadataValue.path(str(config_path)),
            "mlflow_run": dg.MetadataValue.url(mlflow_url) if mlflow_url.startswith("http") else mlflow_url,
        }
    )


def mlflow_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics under names MLflow accepts ("memory/max_active (GiB)" → "memory/max_active _GiB_")."""
    return {
        re.sub(r"[^\w\-. :/]", "_", k): float(v)
        for k, v in metrics.items()
        if k not in {"step", "kind"} and isinstance(v, int | float)
    }


def log_to_mlflow(
    storage: PipelineStorage,
    run_id: str,
    config: dict[str, Any],
    config_path: Path,
    output_dir: Path,
    steps: list[dict[str, Any]],
    messages: list[dict[str, Any]],
) -> str:
    """Params, per-step metrics, the effective config and the adapter, in the pipeline's MLflow store."""
    store = storage.root_path / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name("void-lora")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment("void-lora", artifact_location=(store / "artifacts").as_uri())
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"lora-{run_id[:8]}") as run:
        mlflow.log_params({k: config.get(k) for k in LOGGED_PARAMS if k in config})
        mlflow.set_tag("dagster_run_id", run_id)
        for metrics in steps:
            mlflow.log_metrics(mlflow_metrics(metrics), step=int(metrics["step"]))
        for summary in (m for m in messages if m.get("kind") == "summary"):
            mlflow.log_metrics(mlflow_metrics(summary))
        mlflow.log_artifact(str(config_path))
        if output_dir.exists():
            mlflow.log_artifacts(str(output_dir), artifact_path="adapter")
        mlflow.log_dict({"messages": len(messages)}, "pipes.json")
        return f"{store / 'mlflow.db'} experiment {experiment_id} run {run.info.run_id}"
