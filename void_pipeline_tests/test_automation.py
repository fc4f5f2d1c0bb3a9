"""The pipeline's automation, evaluated by Dagster's own evaluator against an instance: what each event makes run.

Materializations and check results are reported to the instance as events (no step runs here: what a run does is
tested with each stage); the conditions, schedules and their decisions are the real ones of the code location.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor

from void_pipeline.definitions import defs
from void_pipeline.defs.ingest.assets import COLLECTIONS
from void_pipeline.defs.train.automation import RETRAIN_MIN_NEW_EXAMPLES, retrain_on_growth
from void_pipeline_tests.support.cli import fresh_process_json

WAITS = f"retraining waits for {RETRAIN_MIN_NEW_EXAMPLES:,}"
CURATE = {"thread_context", "context_window", "filtered_records", "chat_dataset"}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def materialized(instance: dg.DagsterInstance, key: str, partition: str | None = None, **metadata: int) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata or None)
    )


def checked(instance: dg.DagsterInstance, key: str, check: str, passed: bool) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=dg.AssetKey(key), check_name=check, passed=passed)
    )


class Ticks:
    """Consecutive evaluations of the automation conditions, each from the cursor the one before left."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.cursor: AssetDaemonCursor | None = None

    def requested(self) -> set[str]:
        return set(self.requested_partitions())

    def requested_partitions(self) -> dict[str, set[str | None]]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {
            r.key.to_user_string(): set(result.get_requested_partitions(r.key))
            for r in result.results
            if r.true_subset.size
        }

    def run_until_quiet(self, limit: int = 6) -> set[str]:
        """Tick, "run" what was requested (its materializations reported), and again until nothing is requested:
        everything that was requested on the way."""
        everything: set[str] = set()
        for _ in range(limit):
            requested = self.requested_partitions()
            if not requested:
                return everything
            everything |= set(requested)
            for key, partitions in requested.items():
                for partition in partitions:
                    materialized(self.instance, key, partition)
        raise AssertionError(f"still requesting after {limit} ticks: {everything}")


def test_new_records_curate_but_never_train_and_a_new_adapter_is_evaluated_and_served_only_past_its_gates(
    instance: dg.DagsterInstance,
) -> None:
    ticks = Ticks(instance)
    assert ticks.requested() == set(), "nothing exported yet: nothing to curate"

    for collection in COLLECTIONS:
        materialized(instance, "raw_records", collection)
    assert ticks.run_until_quiet() == CURATE, "new records: the whole curate stage, and never training"
    materialized(instance, "raw_records", "app.bsky.feed.post")
    assert ticks.run_until_quiet() == CURATE, "one collection changed: curated again, still no training"

    materialized(instance, "lora_adapter")
    after_training = ticks.requested()
    # one run from the adapter to serving; the evaluation's blocking checks stop served_model inside it on a failure
    assert after_training == {"eval_generations", "merged_model", "eval_report", "gguf_export", "served_model"}
    for key in after_training:
        materialized(instance, key)
    assert ticks.requested() == set()

    materialized(instance, "chat_dataset")  # a new dataset alone does not re-evaluate the old adapter
    assert "eval_generations" not in ticks.requested()

    materialized(instance, "eval_report")
    checked(instance, "eval_report", "tool_call_validity", passed=False)  # a blocking gate
    for check in ("character_sheet_rate", "tuned_beats_base"):
        checked(instance, "eval_report", check, passed=True)
    assert "served_model" not in ticks.requested(), "a failed blocking gate: the evaluation is not served"

    materialized(instance, "eval_report")
    checked(instance, "eval_report", "tuned_beats_base", passed=False)  # informational, not a gate
    for check in ("tool_call_validity", "character_sheet_rate"):
        checked(instance, "eval_report", check, passed=True)
    assert "served_model" in ticks.requested(), "the gates passed: served, though the tuned model lost to the base"


def test_the_deletion_checks_run_again_after_ingest_without_retraining(instance: dg.DagsterInstance) -> None:
    ticks = Ticks(instance)
    checks = {"lora_adapter:lora_adapter_deleted_examples", "served_model:served_model_deleted_examples"}
    materialized(instance, "thread_context")
    assert not checks & ticks.requested(), "no adapter, nothing served: nothing to count"
    materialized(instance, "lora_adapter")
    materialized(instance, "served_model")
    assert not checks & ticks.requested(), "a new adapter runs its checks in its own run"
    materialized(instance, "thread_context")  # its re-check may have found deleted posts
    assert checks <= ticks.requested()
    assert not checks & ticks.requested(), "once per ingest"
    materialized(instance, "raw_records", "app.bsky.feed.post")  # the agent's own deletions
    assert checks <= ticks.requested()


def test_daily_ingest_asks_for_every_collection_once_per_day() -> None:
    schedule = defs.get_schedule_def("daily_ingest")
    day = datetime.datetime(2026, 11, 30, 5, 0, tzinfo=datetime.UTC)
    context = dg.build_schedule_context(scheduled_execution_time=day, repository_def=defs.get_repository_def())
    requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert sorted(str(r.partition_key) for r in requests) == sorted(COLLECTIONS)
    assert len({r.run_key for r in requests}) == len(COLLECTIONS)
    assert all(str(r.run_key).startswith("2026-11-30:") for r in requests)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("dataset", "trained", "skipped"),
    [
        (None, None, "no chat_dataset has been materialized yet: nothing to train on"),
        (120, None, None),
        (120, 100, f"the training set grew by 20 examples since the adapter (100 → 120); {WAITS}"),
        (100 + RETRAIN_MIN_NEW_EXAMPLES, 100, None),
    ],
)
def test_retrain_on_growth_trains_only_when_the_training_set_grew_enough(
    instance: dg.DagsterInstance, dataset: int | None, trained: int | None, skipped: str | None
) -> None:
    if dataset is not None:
        materialized(instance, "chat_dataset", train_examples=dataset)
    if trained is not None:
        materialized(instance, "lora_adapter", dataset_train_examples=trained)
    result = retrain_on_growth.evaluate_tick(dg.build_schedule_context(instance=instance))
    requests = list(result.run_requests or [])
    assert bool(requests) is (skipped is None), result.skip_message
    if skipped is not None:
        assert result.skip_message == skipped
    else:
        assert requests[0].run_key  # one run per dataset materialization: a second tick does not train twice


def test_retrain_on_growth_retrains_on_deleted_training_examples_once_the_dataset_forgot_them(
    instance: dg.DagsterInstance,
) -> None:
    def counted(deleted: int) -> None:
        check = "lora_adapter_deleted_examples"
        evaluation = dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("lora_adapter"),
            check_name=check,
            passed=False,
            metadata={"deleted_examples": deleted},
        )
        instance.report_runless_asset_event(evaluation)

    def tick() -> dg.RunRequest | str:
        result = retrain_on_growth.evaluate_tick(dg.build_schedule_context(instance=instance))
        return next(iter(result.run_requests or []), None) or str(result.skip_message)

    counted(5)  # counted for an earlier adapter: not this one's
    materialized(instance, "lora_adapter", dataset_train_examples=100)
    dataset = {"train_examples": dg.MetadataValue.int(100)}
    trained_on = dg.AssetMaterialization("chat_dataset", metadata=dataset, tags={"dagster/data_version": "v1"})
    instance.report_runless_asset_event(trained_on)
    assert tick() == f"the training set grew by 0 examples since the adapter (100 → 100); {WAITS}"

    instance.report_runless_asset_event(
        dg.AssetMaterialization("lora_adapter", metadata={"dataset_train_examples": 100, "dataset_sha256": "v1"})
    )
    counted(2)
    assert "chat_dataset is the one it was trained on: rebuild it" in str(tick())
    rebuilt = dg.AssetMaterialization("chat_dataset", metadata=dataset, tags={"dagster/data_version": "v2"})
    instance.report_runless_asset_event(rebuilt)
    request = tick()
    assert isinstance(request, dg.RunRequest), request
    assert request.tags["void/retrain_cause"] == "deletions"
    assert "2 examples of the adapter's training set were deleted since" in request.tags["void/retrain_reason"]


def automation_statuses(env: dict[str, str]) -> dict[str, str]:
    script = (
        "import json; from void_pipeline.definitions import defs; r = defs.get_repository_def(); "
        "print(json.dumps({d.name: d.default_status.value for d in [*r.schedule_defs, *r.sensor_defs]}))"
    )
    return dict(fresh_process_json(script, env, timeout=120))


@pytest.mark.integration
def test_schedules_and_sensors_start_stopped_unless_automation_is_switched_on() -> None:
    names = {"daily_ingest", "recheck_deleted_posts", "retrain_on_growth", "agent_repo_sensor", "pipeline_automation",
             "shadow_daily", "shadow_sooner"}  # fmt: skip
    off = automation_statuses({})
    assert set(off) == names and set(off.values()) == {"STOPPED"}
    on = automation_statuses({"VOID_AUTOMATION": "on"})
    assert set(on.values()) == {"RUNNING"}
