"""When the automation runs, as the code location builds it from the environment: the schedules' times, the
sensors' intervals (``VOID_LIVE_INTERVAL_S``) and the weekly retrain's threshold (``VOID_RETRAIN_MIN_NEW_EXAMPLES``)
deciding a real schedule tick against an instance. The definitions read their settings once, at import: the
defaults are checked in a process without VOID_* variables, changed values in one with them."""

from __future__ import annotations

from typing import Any

import pytest

from void_pipeline_tests.support.cli import fresh_process_json

# The code location's schedules and sensors, and one retrain tick on an instance where chat_dataset's train split
# has 160 examples and the adapter was trained on 100 (it grew by 60).
PROBE = """
import json
import dagster as dg
from void_pipeline.definitions import defs
repository = defs.get_repository_def()
retrain = repository.get_schedule_def("retrain_on_growth")
with dg.instance_for_test() as instance:
    for key, name, value in (("chat_dataset", "train_examples", 160), ("lora_adapter", "dataset_train_examples", 100)):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata={name: value}))
    tick = retrain.evaluate_tick(dg.build_schedule_context(instance=instance))
print(json.dumps({
    "schedules": {s.name: [s.cron_schedule, s.execution_timezone] for s in repository.schedule_defs},
    "sensors": {s.name: s.minimum_interval_seconds for s in repository.sensor_defs},
    "runs": len(tick.run_requests or []),
    "skip": tick.skip_message,
}))
"""


def built_with(env: dict[str, str]) -> dict[str, Any]:
    return dict(fresh_process_json(PROBE, env, drop=("VOID_", "DAGSTER_")))


@pytest.fixture(scope="module")
def default() -> dict[str, Any]:
    return built_with({})


@pytest.fixture(scope="module")
def changed() -> dict[str, Any]:
    return built_with({"VOID_LIVE_INTERVAL_S": "7", "VOID_RETRAIN_MIN_NEW_EXAMPLES": "50"})


def test_schedules_run_at_the_documented_utc_times(default: dict[str, Any], changed: dict[str, Any]) -> None:
    assert default["schedules"] == {
        "daily_ingest": ["0 5 * * *", "UTC"],  # every day, 05:00 UTC
        "recheck_deleted_posts": ["30 5 * * *", "UTC"],  # every day, 05:30 UTC: before a Monday's retrain
        "retrain_on_growth": ["0 6 * * 1", "UTC"],  # Mondays, 06:00 UTC
        "shadow_daily": ["30 6 * * *", "UTC"],  # every day, 06:30 UTC: after the morning ingest and re-check
    }
    assert changed["schedules"] == default["schedules"]


def test_the_sensors_tick_at_their_documented_intervals_and_the_repo_sensor_follows_void_live_interval_s(
    default: dict[str, Any], changed: dict[str, Any]
) -> None:
    assert default["sensors"] == {"agent_repo_sensor": 30, "pipeline_automation": 30, "shadow_sooner": 300}
    assert changed["sensors"] == {"agent_repo_sensor": 7, "pipeline_automation": 30, "shadow_sooner": 300}


def test_void_retrain_min_new_examples_changes_the_weekly_retrain_s_decision(
    default: dict[str, Any], changed: dict[str, Any]
) -> None:
    # grown by 60: below the default 500 the tick skips, saying by how much the set grew; at 50 it trains
    assert default["runs"] == 0 and "grew by 60 examples" in default["skip"] and "waits for 500" in default["skip"]
    assert changed["runs"] == 1 and changed["skip"] is None
