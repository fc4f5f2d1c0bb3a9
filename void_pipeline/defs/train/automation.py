"""Retraining on a weekly cron, only when the training set grew enough since the adapter that is there, or enough of
the adapter's training examples were deleted upstream since (and chat_dataset was rebuilt without them)."""

import dagster as dg

from void_pipeline.defs.automation import SCHEDULE_STATUS
from void_pipeline.defs.curate.assets import chat_dataset
from void_pipeline.defs.train.assets import lora_adapter, merged_model
from void_pipeline.defs.train.checks import lora_adapter_deleted_examples
from void_pipeline.lib.settings import settings
from void_pipeline.lib.train.runs import retrain_decision

RETRAIN_MIN_NEW_EXAMPLES = settings().retrain_min_new_examples
RETRAIN_ON_DELETIONS = settings().retrain_on_deletions

train_job = dg.define_asset_job(
    "train_job",
    # by key: the evaluation's assets live in their own stage
    selection=dg.AssetSelection.assets(lora_adapter, merged_model, "eval_generations", "eval_report"),
    description="Train a new adapter on the latest chat_dataset, merge it and evaluate it (checks included).",
)


def latest_number(instance: dg.DagsterInstance, key: dg.AssetKey, name: str) -> tuple[int | None, str | None]:
    """A whole-number metadata value of the asset's latest materialization, and that materialization's run id."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None, None
    value = event.asset_materialization.metadata.get(name)
    number = value.value if isinstance(value, dg.IntMetadataValue) else None
    return number, event.run_id


def deleted_examples(instance: dg.DagsterInstance) -> int | None:
    """The deletion check's latest count for the latest adapter (None: not evaluated since the adapter was made)."""
    record = instance.get_latest_asset_check_evaluation_record(lora_adapter_deleted_examples.check_key)
    adapter = instance.get_latest_materialization_event(lora_adapter.key)
    event = record.event if record else None
    evaluation = event.dagster_event.asset_check_evaluation_data if event and event.dagster_event else None
    if evaluation is None or adapter is None or event is None or event.timestamp < adapter.timestamp:
        return None
    value = evaluation.metadata.get("deleted_examples")
    return value.value if isinstance(value, dg.IntMetadataValue) else None


def dataset_changed(instance: dg.DagsterInstance) -> bool:
    """chat_dataset's latest version is not the one the latest adapter was trained on (its dataset_sha256)."""
    dataset = instance.get_latest_materialization_event(chat_dataset.key)
    adapter = instance.get_latest_materialization_event(lora_adapter.key)
    if dataset is None or adapter is None or not dataset.asset_materialization or not adapter.asset_materialization:
        return True
    trained_on = adapter.asset_materialization.metadata.get("dataset_sha256")
    version = (dataset.asset_materialization.tags or {}).get("dagster/data_version")
    return trained_on is None or version is None or getattr(trained_on, "value", None) != version


@dg.schedule(
    job=train_job,
    cron_schedule="0 6 * * 1",
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description=f"Mondays: retrain when chat_dataset's train split grew by at least {RETRAIN_MIN_NEW_EXAMPLES} "
    "examples since the adapter was trained (VOID_RETRAIN_MIN_NEW_EXAMPLES), or when at least "
    f"{RETRAIN_ON_DELETIONS} of its training examples were deleted since (VOID_RETRAIN_ON_DELETIONS, 0: never); "
    "served_model follows when the evaluation's gates pass.",
)
def retrain_on_growth(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    instance = context.instance
    dataset_examples, dataset_run = latest_number(instance, chat_dataset.key, "train_examples")
    trained_examples, _ = latest_number(instance, lora_adapter.key, "dataset_train_examples")
    deleted, changed = deleted_examples(instance), dataset_changed(instance)
    decision = retrain_decision(
        dataset_examples, trained_examples, RETRAIN_MIN_NEW_EXAMPLES, deleted, RETRAIN_ON_DELETIONS, changed
    )
    if not decision.retrain:
        return dg.SkipReason(decision.reason)
    context.log.info(decision.reason)
    tags = {"void/trigger": "retrain_on_growth", "void/retrain_cause": str(decision.cause)}
    return dg.RunRequest(run_key=f"dataset-{dataset_run}", tags={**tags, "void/retrain_reason": decision.reason[:200]})
