"""lora_adapter and merged_model: axolotl QLoRA and merge-lora, run outside the orchestrator through Dagster Pipes."""

import base64
import json
from pathlib import Path
from typing import Any

import dagster as dg

from void_pipeline.defs.agent import latest_training, recorded_agent
from void_pipeline.defs.automation import AFTER_NEW_ADAPTER
from void_pipeline.defs.curate.assets import chat_dataset
from void_pipeline.defs.metadata import OWNERS
from void_pipeline.defs.run_slots import record_dead_worker
from void_pipeline.lib import processes
from void_pipeline.lib.layout import REPO_ROOT, RunPaths
from void_pipeline.lib.train import runs
from void_pipeline.lib.train.tracking import default_uri
from void_pipeline.resources.model import ModelChoice
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer

# Under the k8s executor (dagster-k8s) each GPU step's pod asks for one GPU; other executors ignore the tag.
# Under the Kubernetes executor (VOID_EXECUTOR=k8s) a step with these tags runs in a pod of its own on a GPU node.
GPU_STEP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
}
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
}


class TrainerFailure(dg.Failure):
    """A failure the trainer explained (its failure file): ``stage`` says where."""

    def __init__(self, stage: str, errors: list[str], run_dir: Path) -> None:
        super().__init__(
            description=f"{stage}: " + "\n".join(errors),
            metadata={"stage": stage, "run_dir": dg.MetadataValue.path(str(run_dir))},
            allow_retries=stage != "lock",
        )
        self.stage = stage


def run_external(
    context: dg.AssetExecutionContext,
    client: dg.PipesSubprocessClient,
    trainer: Trainer,
    module: str,
    run: RunPaths,
    extras: dict[str, Any],
) -> dg.PipesClientCompletedInvocation:
    """A Pipes step in the trainer environment, bound to this run: it stops when this step or the run worker is
    gone. A failure it explained (its failure file) becomes a clear dg.Failure."""
    run_dir = run.root
    failure = run.failure(context.run.run_id)
    failure.unlink(missing_ok=True)

    with processes.bound_to_run_worker(record_dead_worker(context)) as watch_pids:
        try:
            return client.run(
                context=context,
                command=[trainer.interpreter(), "-m", module],
                extras={
                    **extras,
                    "run_dir": str(run_dir),
                    "failure_path": str(failure),
                    "watch_pids": watch_pids,
                },
                env={**OFFLINE, "PYTHONPATH": str(REPO_ROOT)},
                cwd=str(run_dir),
            )
        except Exception as err:  # the Pipes client raises a private error type for a non-zero exit
            if not failure.exists():
                raise
            explained = json.loads(failure.read_text())
            raise TrainerFailure(explained["stage"], explained["errors"], run_dir) from err


def plot_markdown(plot: Path) -> dg.MarkdownMetadataValue:
    """The plot itself in the UI (a PNG inline, as Dagster's markdown renders it), with where it lies."""
    if not plot.exists():
        return dg.MetadataValue.md("_no plot_")
    image = base64.b64encode(plot.read_bytes()).decode()
    return dg.MetadataValue.md(f"![loss](data:image/png;base64,{image})\n\n`{plot}`")


@dg.asset(
    deps=[chat_dataset],
    group_name="train",
    owners=OWNERS,
    kinds={"axolotl", "pytorch", "mlflow"},
    pool="gpu",
    op_tags=GPU_STEP_TAGS,
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
    runs.begin(plan, context.run.run_id)
    try:
        invocation = run_external(
            context,
            pipes_subprocess_client,
            trainer,
            "void_pipeline.external.train_lora",
            plan.run,
            {"config": str(plan.run.config), "output_dir": str(plan.output_dir), "start_step": plan.start_step},
        )
    except TrainerFailure as err:
        if err.stage != "lock":  # a refused run never trained here: the folder's state is its holder's
            runs.failed(plan)
        raise
    except Exception:
        runs.failed(plan)
        raise
    summary = runs.finish(
        plan,
        layout.train,
        chosen,
        tracking_uri=trainer.tracking_uri or default_uri(storage.layout.mlflow),
        mlflow_store=storage.layout.mlflow,
        registered_model=trainer.registered_model,
        dagster_run=context.run.run_id,
    )
    tracked = summary.tracked
    return dg.MaterializeResult(
        metadata={
            **(invocation.get_materialize_result().metadata or {}),
            "run_dir": dg.MetadataValue.path(str(plan.run.root)),
            "base_model": str(plan.config["base_model"]),
            "config": chosen.config,
            "overlays": ", ".join(chosen.overlays) or "none",
            "final_loss": summary.final_loss,
            "val_loss_before": summary.val_loss_before,
            "val_loss_after": summary.val_loss_after,
            "loss_curve": dg.MetadataValue.md(summary.history.curve_markdown()),
            "loss_plot": plot_markdown(summary.plot),
            "effective_config": dg.MetadataValue.path(str(plan.run.config)),
            "dataset_sha256": plan.data_hash,
            "dataset_train_examples": runs.train_examples(plan.dataset),  # retrain_on_growth compares against it
            "resumed_from": plan.resumed.checkpoint.name if plan.resumed else "none",
            "mlflow_run": dg.MetadataValue.url(tracked.link(trainer.ui_url)),
            "loss_chart": dg.MetadataValue.url(tracked.link(trainer.ui_url, "model-metrics")),
            "mlflow_run_id": tracked.run_id,
            "registered_model": f"{tracked.model_name} v{tracked.model_version}",
            "settings": dg.MetadataValue.json(storage.settings or {"none": "no VOID_* variable set: defaults"}),
        }
    )


@dg.asset(
    deps=[lora_adapter],
    group_name="train",
    owners=OWNERS,
    kinds={"axolotl", "safetensors"},
    pool="gpu",
    op_tags=GPU_STEP_TAGS,
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
    run, adapter = RunPaths(Path(latest["run_dir"])), Path(latest["adapter"])
    if not (adapter / "adapter_config.json").exists():
        raise dg.Failure(f"the latest adapter {adapter} is gone or incomplete (no adapter_config.json)")
    context.log.info(f"merging {adapter} into {latest['base_model']}")
    invocation = run_external(
        context,
        pipes_subprocess_client,
        trainer,
        "void_pipeline.external.merge_lora",
        run,
        {"config": latest["config"], "adapter": str(adapter)},
    )
    return dg.MaterializeResult(
        metadata={
            **(invocation.get_materialize_result().metadata or {}),
            "adapter_path": dg.MetadataValue.path(str(adapter)),
        }
    )
