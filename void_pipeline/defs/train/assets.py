"""lora_adapter and merged_model: axolotl QLoRA and merge-lora, run outside the orchestrator through Dagster Pipes."""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.curate.assets import chat_dataset
from void_pipeline.external.train_lora import RUN_LOCK
from void_pipeline.lib import processes, training
from void_pipeline.lib.axolotl_config import effective_config, with_metrics_plugin, write
from void_pipeline.lib.files import Busy, acquire_owner
from void_pipeline.lib.paths import REPO_ROOT
from void_pipeline.lib.tracking import default_uri, log_training
from void_pipeline.resources.model import BaseModel
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer

# Under the k8s executor (dagster-k8s) each GPU step's pod asks for one GPU; other executors ignore the tag.
GPU_STEP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
}


def has_rows(path: Path) -> bool:
    return path.exists() and bool(path.read_bytes().strip())


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
    run_dir: Path,
    extras: dict[str, Any],
) -> dg.PipesClientCompletedInvocation:
    """A Pipes step in the trainer environment, bound to this run: it stops when this step or the run worker is
    gone. A failure it explained (its failure file) becomes a clear dg.Failure."""
    failure = run_dir / f"failure-{context.run.run_id}.json"
    failure.unlink(missing_ok=True)

    def record_failure(message: str) -> None:  # the run worker is gone: without this the run stays STARTED
        context.instance.report_run_failed(context.run, message)

    with processes.bound_to_run_worker(record_failure) as watch_pids:
        try:
            return client.run(
                context=context,
                command=[trainer.interpreter(), "-m", module],
                extras={**extras, "run_dir": str(run_dir), "failure_path": str(failure), "watch_pids": watch_pids},
                env={**OFFLINE, "PYTHONPATH": str(REPO_ROOT)},
                cwd=str(run_dir),
            )
        except Exception as err:  # the Pipes client raises a private error type for a non-zero exit
            if not failure.exists():
                raise
            explained = json.loads(failure.read_text())
            raise TrainerFailure(explained["stage"], explained["errors"], run_dir) from err


def refuse_if_locked(run_dir: Path) -> None:
    """Fail at once, naming the holder, when a live trainer holds the run folder (the trainer checks again)."""
    try:
        acquire_owner(run_dir / RUN_LOCK, "checking the run folder", f"run folder {run_dir}").release()
    except Busy as err:
        raise dg.Failure(str(err), allow_retries=False) from err


@dg.asset(
    deps=[chat_dataset],
    group_name="train",
    kinds={"axolotl", "pytorch", "mlflow"},
    pool="gpu",
    op_tags=GPU_STEP_TAGS,
    description="A LoRA adapter trained by axolotl (QLoRA) on chat_dataset; a killed run resumes from its last "
    "checkpoint, a finished one is never written over.",
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    storage: PipelineStorage,
    base_model: BaseModel,
    trainer: Trainer,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    layout = recorded_agent(storage)[1]
    dataset = layout.curate.chat_dataset("openai")
    train_root = layout.train.root
    val_path = dataset / "val.jsonl" if has_rows(dataset / "val.jsonl") else None
    system_prompt = dataset / "system_prompt.txt"
    extra: dict[str, Any] = {"sequence_len": base_model.sequence_len}  # the budget the dataset was built for
    if system_prompt.exists():
        extra["default_system_message"] = system_prompt.read_text()  # stored once, not in every row

    def config_for(run_dir: Path, resume: Path | None) -> dict[str, Any]:
        placement = {"dataset_prepared_path": str(run_dir / "prepared")}
        if resume is not None:
            placement["resume_from_checkpoint"] = str(resume)
        return with_metrics_plugin(
            effective_config(
                trainer.config,
                trainer.overlays,
                base_model.local_path or base_model.name,
                dataset / "train.jsonl",
                run_dir / "adapter",
                {**extra, **placement, **trainer.overrides},
                val_path=val_path,
            )
        )

    data_hash = training.dataset_hash(dataset)
    fingerprint = training.config_fingerprint(config_for(train_root / "probe", None), data_hash)
    resumable = training.find_resumable(train_root, fingerprint)
    if resumable is not None:
        run_dir = resumable.run_dir
        context.log.info(f"resuming {run_dir.name} from {resumable.checkpoint.name} (step {resumable.step})")
    else:
        run_dir = layout.train.run(context.run.run_id)
        if training.read_state(run_dir).get("status") == training.COMPLETE:
            raise dg.Failure(f"output directory collision: {run_dir} holds a finished adapter; it is never overwritten")
    refuse_if_locked(run_dir)
    config = config_for(run_dir, resumable.checkpoint if resumable else None)
    errors = training.preflight_errors(config, dataset)
    if errors:
        raise dg.Failure(description="cannot train:\n- " + "\n- ".join(errors), metadata={"dataset": str(dataset)})

    output_dir = Path(config["output_dir"])
    config_path = write(config, run_dir / "axolotl.yml")
    state = training.read_state(run_dir)
    training.write_state(
        run_dir,
        fingerprint=fingerprint,
        dataset_sha256=data_hash,
        status="training",
        dagster_runs=[*state.get("dagster_runs", []), context.run.run_id],
    )
    context.log.info(f"training {trainer.config} (+{trainer.overlays}) on {dataset}; config {config_path}")
    try:
        invocation = run_external(
            context,
            pipes_subprocess_client,
            trainer,
            "void_pipeline.external.train_lora",
            run_dir,
            {
                "config": str(config_path),
                "output_dir": str(output_dir),
                "start_step": resumable.step if resumable else 0,
            },
        )
    except TrainerFailure as err:
        if err.stage != "lock":  # a refused run never trained here: the folder's state is its holder's
            training.write_state(run_dir, status="failed")  # resumable from its checkpoints, if it left any
        raise
    except Exception:
        training.write_state(run_dir, status="failed")
        raise
    reported = invocation.get_materialize_result().metadata or {}

    history = training.History(training.read_metrics(run_dir))
    plot = training.loss_png(history.train, history.evals, run_dir / "loss_curve.png")
    tags = {
        "dagster_run_id": context.run.run_id,
        "dataset_sha256": data_hash,
        "config_fingerprint": fingerprint,
        "axolotl_config": trainer.config,
        "overlays": ",".join(trainer.overlays),
        "base_model": str(config["base_model"]),
        "run_dir": str(run_dir),
        **({"resumed_from": resumable.checkpoint.name} if resumable else {}),
    }
    tracked = log_training(
        trainer.tracking_uri or default_uri(storage.layout.mlflow),
        storage.layout.mlflow,
        run_name=f"lora-{run_dir.name[:8]}",
        config=config,
        config_path=config_path,
        output_dir=output_dir,
        history=history.entries,
        summary=history.summary,
        tags=tags,
        plot=plot,
        registered_model=trainer.registered_model,
    )
    training.write_state(
        run_dir, status=training.COMPLETE, mlflow_run=tracked.run_id, model_version=tracked.model_version
    )
    layout.train.write_latest(  # the hand-off to merged_model (and evaluate): a file, not another asset's metadata
        run_dir=str(run_dir),
        adapter=str(output_dir),
        base_model=str(config["base_model"]),
        config=str(config_path),
        dataset_sha256=data_hash,
        mlflow_run=tracked.run_id,
        model_version=tracked.model_version,
        dagster_run=context.run.run_id,
    )

    losses = [v for _, v in history.train]
    eval_points = history.evals
    return dg.MaterializeResult(
        metadata={
            **reported,
            "run_dir": dg.MetadataValue.path(str(run_dir)),
            "base_model": str(config["base_model"]),
            "config": trainer.config,
            "overlays": ", ".join(trainer.overlays) or "none",
            "final_loss": losses[-1] if losses else float("nan"),
            "val_loss_before": eval_points[0][1] if eval_points else float("nan"),
            "val_loss_after": eval_points[-1][1] if eval_points else float("nan"),
            "loss_curve": dg.MetadataValue.md(history.curve_markdown()),
            "loss_plot": dg.MetadataValue.path(str(plot)),
            "effective_config": dg.MetadataValue.path(str(config_path)),
            "dataset_sha256": data_hash,
            "resumed_from": resumable.checkpoint.name if resumable else "none",
            "mlflow_run": dg.MetadataValue.url(tracked.link) if tracked.link.startswith("http") else tracked.link,
            "mlflow_run_id": tracked.run_id,
            "registered_model": f"{tracked.model_name} v{tracked.model_version}",
        }
    )


@dg.asset(
    deps=[lora_adapter],
    group_name="train",
    kinds={"axolotl", "safetensors"},
    pool="gpu",
    op_tags=GPU_STEP_TAGS,
    description="The latest adapter merged into its base model (axolotl merge-lora): a standalone model directory "
    "for vLLM and GGUF export.",
)
def merged_model(
    context: dg.AssetExecutionContext,
    storage: PipelineStorage,
    trainer: Trainer,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    layout = recorded_agent(storage)[1]
    latest = layout.train.read_latest()
    if latest is None:
        raise dg.Failure(f"no finished training in {layout.train.root}: materialize lora_adapter first")
    run_dir, adapter = Path(latest["run_dir"]), Path(latest["adapter"])
    if not (adapter / "adapter_config.json").exists():
        raise dg.Failure(f"the latest adapter {adapter} is gone or incomplete (no adapter_config.json)")
    context.log.info(f"merging {adapter} into {latest['base_model']}")
    invocation = run_external(
        context,
        pipes_subprocess_client,
        trainer,
        "void_pipeline.external.merge_lora",
        run_dir,
        {"config": latest["config"], "adapter": str(adapter)},
    )
    return dg.MaterializeResult(
        metadata={
            **(invocation.get_materialize_result().metadata or {}),
            "adapter_path": dg.MetadataValue.path(str(adapter)),
        }
    )
