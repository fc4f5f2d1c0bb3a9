"""lora_adapter and merged_model: axolotl QLoRA and merge-lora, run outside the orchestrator through Dagster Pipes."""

from typing import Any

import dagster as dg

from void_pipeline.defs.agent import latest_training, recorded_agent
from void_pipeline.defs.automation import AFTER_NEW_ADAPTER
from void_pipeline.defs.curate.assets import chat_dataset
from void_pipeline.defs.external import TrainerFailure, reported_metadata, run_external
from void_pipeline.defs.metadata import OWNERS, as_metadata
from void_pipeline.lib.layout import RunPaths
from void_pipeline.lib.train import runs
from void_pipeline.lib.train.metadata import training_metadata
from void_pipeline.lib.train.tracking import default_uri
from void_pipeline.resources.model import ModelChoice
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer


def train(
    context: dg.AssetExecutionContext,
    client: dg.PipesSubprocessClient,
    trainer: Trainer,
    plan: runs.TrainingPlan,
    accelerator: str,
) -> dict[str, Any]:
    """The planned run trained by axolotl in the trainer environment (on ``accelerator``: cuda | cpu); a failed one
    is recorded as failed (unless the trainer refused it for another's lock: that folder's state is its holder's).
    The metadata it reported."""
    runs.begin(plan, context.run.run_id)
    extras = {"config": str(plan.run.config), "output_dir": str(plan.output_dir), "start_step": plan.start_step}
    extras["accelerator"] = accelerator
    try:
        return reported_metadata(
            run_external(context, client, trainer, "void_pipeline.external.train_lora", plan.run, extras)
        )
    except TrainerFailure as err:
        if err.stage != "lock":
            runs.failed(plan)
        raise
    except Exception:
        runs.failed(plan)
        raise


@dg.asset(
    deps=[chat_dataset],
    group_name="train",
    owners=OWNERS,
    kinds={"axolotl", "pytorch", "mlflow"},
    pool="gpu",  # its GPU work is a Pipes step: the trainer container or pod asks for the GPU
    description="A LoRA adapter trained by axolotl (QLoRA) on chat_dataset; a killed run resumes from its last "
    "checkpoint, a finished one is never written over.",
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    storage: PipelineStorage,
    model: ModelChoice,
    trainer: Trainer,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    layout = recorded_agent(storage)[1]
    chosen = model.chosen()
    try:
        plan = runs.plan_training(
            layout.train, layout.curate.latest_dataset(), chosen, trainer.overrides, context.run.run_id
        )
    except runs.CannotTrain as err:
        raise dg.Failure(description="cannot train:\n- " + "\n- ".join(err.errors), allow_retries=err.retry) from err
    if plan.resumed:
        context.log.info(f"resuming {plan.run.root.name} from {plan.resumed.checkpoint.name} (step {plan.start_step})")
    context.log.info(f"training {chosen.config} (+{list(chosen.overlays)}) on {plan.dataset}; config {plan.run.config}")
    reported = train(context, pipes_subprocess_client, trainer, plan, model.resolved_accelerator())
    summary = runs.finish(
        plan,
        layout.train,
        chosen,
        tracking_uri=trainer.tracking_uri or default_uri(storage.layout.mlflow),
        mlflow_store=storage.layout.mlflow,
        registered_model=trainer.registered_model,
        dagster_run=context.run.run_id,
    )
    metadata = training_metadata(plan, chosen, summary, trainer.ui_url, storage.settings)
    return dg.MaterializeResult(metadata={**reported, **as_metadata(metadata)})


@dg.asset(
    deps=[lora_adapter],
    group_name="train",
    owners=OWNERS,
    kinds={"axolotl", "safetensors"},
    pool="gpu",  # its GPU work is a Pipes step: the trainer container or pod asks for the GPU
    description="The latest adapter merged into its base model (axolotl merge-lora): a standalone model directory "
    "for vLLM and GGUF export.",
    automation_condition=AFTER_NEW_ADAPTER,
)
def merged_model(
    context: dg.AssetExecutionContext,
    storage: PipelineStorage,
    trainer: Trainer,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    layout = recorded_agent(storage)[1]
    latest = latest_training(layout)
    if not (latest.adapter / "adapter_config.json").exists():
        raise dg.Failure(f"the latest adapter {latest.adapter} is gone or incomplete (no adapter_config.json)")
    context.log.info(f"merging {latest.adapter} into {latest.base_model}")
    invocation = run_external(
        context,
        pipes_subprocess_client,
        trainer,
        "void_pipeline.external.merge_lora",
        RunPaths(latest.run_dir),
        {"config": str(latest.config), "adapter": str(latest.adapter)},
    )
    return dg.MaterializeResult(
        metadata={**reported_metadata(invocation), "adapter_path": dg.MetadataValue.path(str(latest.adapter))}
    )
