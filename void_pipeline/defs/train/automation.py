"""Retraining on a weekly cron, only when the training set grew enough since the adapter that is there."""

import dagster as dg

from void_pipeline.defs.automation import SCHEDULE_STATUS
from void_pipeline.defs.curate.assets import chat_dataset
from void_pipeline.defs.train.assets import lora_adapter, merged_model
from void_pipeline.lib.settings import settings
from void_pipeline.lib.train.runs import retrain_decision

RETRAIN_MIN_NEW_EXAMPLES = settings().retrain_min_new_examples

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


@dg.schedule(
    job=train_job,
    cron_schedule="0 6 * * 1",
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description=f"Mondays: retrain when chat_dataset's train split grew by at least {RETRAIN_MIN_NEW_EXAMPLES} "
    "examples since the adapter was trained (VOID_RETRAIN_MIN_NEW_EXAMPLES); served_model follows when the "
    "evaluation's gates pass.",
)
def retrain_on_growth(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    dataset_examples, dataset_run = latest_number(context.instance, chat_dataset.key, "train_examples")
    trained_examples, _ = latest_number(context.instance, lora_adapter.key, "dataset_train_examples")
    decision = retrain_decision(dataset_examples, trained_examples, RETRAIN_MIN_NEW_EXAMPLES)
    if not decision.retrain:
        return dg.SkipReason(decision.reason)
    context.log.info(decision.reason)
    return dg.RunRequest(run_key=f"dataset-{dataset_run}", tags={"void/trigger": "retrain_on_growth"})
