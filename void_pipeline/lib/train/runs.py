"""A training run from plan to summary, without Dagster: which run folder (new, or the one to resume), the effective
config, the checks that refuse a run before a GPU is spent, and — once the trainer is done — its history, plot,
MLflow run and the hand-off to the next stage (``train/latest.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from void_pipeline.lib.curate.request import dataset_profile
from void_pipeline.lib.files import Busy, acquire_owner
from void_pipeline.lib.handoffs import TrainingOutcome
from void_pipeline.lib.layout import DatasetPaths, RunPaths, TrainPaths
from void_pipeline.lib.model import ChosenModel, mismatch
from void_pipeline.lib.train import training
from void_pipeline.lib.train.axolotl_config import effective_config, with_metrics_plugin, write
from void_pipeline.lib.train.tracking import TrackedRun, log_training
from void_pipeline.lib.train.training_set import TrainingSet, record_training_set

# The axolotl configs read OpenAI-style messages (datasets[].type: chat_template): the format training can use.
TRAINABLE_FORMAT = "openai"


class CannotTrain(ValueError):
    """Reasons a run must not start, one per line; ``retry`` is False when trying again cannot help."""

    def __init__(self, errors: list[str], retry: bool = False) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        self.retry = retry


@dataclass(frozen=True)
class TrainingPlan:
    run: RunPaths
    dataset: Path
    config: dict[str, Any]
    data_hash: str
    fingerprint: str
    resumed: training.Resumable | None

    @property
    def start_step(self) -> int:
        return self.resumed.step if self.resumed else 0

    @property
    def output_dir(self) -> Path:
        return Path(self.config["output_dir"])


def run_config(
    chosen: ChosenModel, dataset: Path, run: RunPaths, overrides: dict[str, Any], resume: Path | None
) -> dict[str, Any]:
    """The effective axolotl config of a run: the chosen model's config and overlays, its weights and sequence
    length, this dataset, this folder; then the operator's last-word keys."""
    files = DatasetPaths(dataset)
    val = files.split("val")
    extra: dict[str, Any] = {"sequence_len": chosen.sequence_len, "dataset_prepared_path": str(run.prepared)}
    system_prompt = files.system_prompt
    # stored once, not in every row — unless the runtime's rows carry their own (Letta's holds the request's time)
    if system_prompt.exists() and dataset_profile(files.request, system_prompt, files.tools).runtime == "direct":
        extra["default_system_message"] = system_prompt.read_text()
    if resume is not None:
        extra["resume_from_checkpoint"] = str(resume)
    config = effective_config(
        chosen.config,
        list(chosen.overlays),
        chosen.weights,
        files.split("train"),
        run.adapter,
        {**extra, **overrides},
        val_path=val if val.exists() and val.read_bytes().strip() else None,
    )
    return with_metrics_plugin(config)


def plan_training(
    train: TrainPaths, dataset: Path | None, chosen: ChosenModel, overrides: dict[str, Any], dagster_run: str
) -> TrainingPlan:
    """The run to start or resume, its config written to the run folder; CannotTrain with every reason not to."""
    if dataset is None or not dataset.exists():
        raise CannotTrain(["no chat dataset has been built: materialize chat_dataset first"])
    if dataset.name != TRAINABLE_FORMAT:
        raise CannotTrain(
            [
                f"the latest chat_dataset is in the {dataset.name} format; the axolotl configs train on "
                f"{TRAINABLE_FORMAT} messages (chat_template): materialize chat_dataset with format {TRAINABLE_FORMAT}"
            ]
        )
    data_hash = training.dataset_hash(dataset)
    probe = run_config(chosen, dataset, train.run("probe"), overrides, None)
    fingerprint = training.config_fingerprint(probe, data_hash)
    resumed = training.find_resumable(train, fingerprint)
    run = resumed.run if resumed else train.run(dagster_run)
    if resumed is None and training.read_state(run).get("status") == training.COMPLETE:
        raise CannotTrain([f"output directory collision: {run.root} holds a finished adapter; it is never overwritten"])
    try:
        acquire_owner(run.lock, "checking the run folder", f"run folder {run.root}").release()
    except Busy as err:  # a live trainer holds it (the trainer checks again)
        raise CannotTrain([str(err)]) from err
    config = run_config(chosen, dataset, run, overrides, resumed.checkpoint if resumed else None)
    manifest = DatasetPaths(dataset).manifest
    built = json.loads(manifest.read_text()) if manifest.exists() else {}
    errors = mismatch(built, chosen) + training.preflight_errors(config, dataset)
    if errors:
        raise CannotTrain(errors)
    write(config, run.config)
    return TrainingPlan(run, dataset, config, data_hash, fingerprint, resumed)


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    cause: str | None = None  # when it retrains: first_adapter | growth | deletions (the run's tag)


def retrain_decision(
    dataset_examples: int | None,
    trained_examples: int | None,
    min_new: int,
    deleted: int | None = None,
    min_deleted: int = 0,
    dataset_changed: bool = True,
) -> RetrainDecision:
    """Whether a scheduled retrain should run: the training set (train split) grew by at least ``min_new`` examples
    since the adapter there was trained, or at least ``min_deleted`` (0: never) of the adapter's training examples
    were deleted since (``deleted``, the deletion check's count) and chat_dataset was rebuilt without them
    (``dataset_changed``: its version is not the one the adapter was trained on), or there is no adapter yet."""
    if dataset_examples is None:
        return RetrainDecision(False, "no chat_dataset has been materialized yet: nothing to train on")
    if trained_examples is None:
        return RetrainDecision(True, f"no adapter yet: training on {dataset_examples:,} examples", "first_adapter")
    grew = dataset_examples - trained_examples
    if grew >= min_new:
        return RetrainDecision(
            True, f"the training set grew by {grew:,} examples ({trained_examples:,} → {dataset_examples:,})", "growth"
        )
    waits = (
        f"the training set grew by {grew:,} examples since the adapter ({trained_examples:,} → "
        f"{dataset_examples:,}); retraining waits for {min_new:,}"
    )
    if not min_deleted or not deleted:
        return RetrainDecision(False, waits)
    if deleted < min_deleted:
        return RetrainDecision(False, f"{waits}, or {min_deleted:,} deleted examples ({deleted:,} so far)")
    deleted_reason = (
        f"{deleted:,} examples of the adapter's training set were deleted since (retrain at {min_deleted:,})"
    )
    if not dataset_changed:
        return RetrainDecision(False, f"{deleted_reason}, but chat_dataset is the one it was trained on: rebuild it")
    return RetrainDecision(True, deleted_reason, "deletions")


def train_examples(dataset: Path) -> int:
    """Rows in a chat dataset's train split."""
    split = DatasetPaths(dataset).split("train")
    if not split.exists():
        return 0
    with split.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def begin(plan: TrainingPlan, dagster_run: str) -> None:
    """Mark the run folder as training, by this Dagster run (a resumed folder lists every run that worked on it)."""
    state = training.read_state(plan.run)
    training.write_state(
        plan.run,
        fingerprint=plan.fingerprint,
        dataset_sha256=plan.data_hash,
        status="training",
        dagster_runs=[*state.get("dagster_runs", []), dagster_run],
    )


def failed(plan: TrainingPlan) -> None:
    """The run stopped without an adapter: resumable from its checkpoints, if it left any."""
    training.write_state(plan.run, status="failed")


@dataclass(frozen=True)
class TrainingSummary:
    history: training.History
    plot: Path
    tracked: TrackedRun
    tags: dict[str, str] = field(default_factory=dict)
    training_set: TrainingSet | None = None

    @property
    def final_loss(self) -> float:
        return self.history.train[-1][1] if self.history.train else float("nan")

    @property
    def val_loss_before(self) -> float:
        return self.history.evals[0][1] if self.history.evals else float("nan")

    @property
    def val_loss_after(self) -> float:
        return self.history.evals[-1][1] if self.history.evals else float("nan")


def finish(
    plan: TrainingPlan,
    train: TrainPaths,
    chosen: ChosenModel,
    *,
    tracking_uri: str,
    mlflow_store: Path,
    registered_model: str,
    dagster_run: str,
) -> TrainingSummary:
    """After the trainer succeeded: the loss plot, the MLflow run and model version, the run marked complete, and
    ``train/latest.json`` (the hand-off to merged_model and evaluate) written last."""
    history = training.History(training.read_metrics(plan.run))
    plot = training.loss_png(history.train, history.evals, plan.run.loss_plot)
    trained_on = record_training_set(plan.dataset, plan.run.training_set)  # what the deletion checks count against
    tags = {
        "dagster_run_id": dagster_run,
        "dataset_sha256": plan.data_hash,
        **({"source_uris_sha256": trained_on.digest} if trained_on.digest else {}),
        "config_fingerprint": plan.fingerprint,
        "axolotl_config": chosen.config,
        "overlays": ",".join(chosen.overlays),
        "base_model": str(plan.config["base_model"]),
        "run_dir": str(plan.run.root),
        **({"resumed_from": plan.resumed.checkpoint.name} if plan.resumed else {}),
    }
    tracked = log_training(
        tracking_uri,
        mlflow_store,
        run_name=f"lora-{plan.run.root.name[:8]}",
        config=plan.config,
        config_path=plan.run.config,
        output_dir=plan.output_dir,
        history=history.entries,
        summary=history.summary,
        tags=tags,
        plot=plot,
        registered_model=registered_model,
        dataset=plan.dataset,
    )
    training.write_state(
        plan.run, status=training.COMPLETE, mlflow_run=tracked.run_id, model_version=tracked.model_version
    )
    train.write_latest(
        TrainingOutcome(
            run_dir=plan.run.root,
            adapter=plan.output_dir,
            base_model=str(plan.config["base_model"]),
            config=plan.run.config,
            dataset=plan.dataset,
            dataset_sha256=plan.data_hash,
            source_uris_sha256=trained_on.digest,
            mlflow_run=tracked.run_id,
            model_version=tracked.model_version,
            dagster_run=dagster_run,
        )
    )
    return TrainingSummary(history, plot, tracked, tags, trained_on)
