"""How the pipeline runs itself: the automation conditions the assets carry, and whether schedules and sensors
start switched on.

Everything here is visible and switchable in the UI (Automation). With ``VOID_AUTOMATION=on`` the schedules and
sensors start running when the daemon first sees them; by default (the demo, `make ui`) they start stopped, and an
operator switches on what they want. A status switched in the UI is kept by the instance across restarts.

    daily_ingest          schedule  every collection of raw_records, incrementally, each morning
    agent_repo_sensor     sensor    the agent's PDS firehose: a raw_records run for each collection that changed
    retrain_on_growth     schedule  weekly: lora_adapter and its evaluation, only if chat_dataset grew enough
    shadow_daily          schedule  06:30 UTC: the shadow job (shadow_replies, shadow_report) for the previous UTC
                                    day; skipped while no model is served
    shadow_sooner         sensor    today's shadow job after thread_context changed, at most one run an hour
    pipeline_automation   sensor    evaluates the conditions below every 30 s
"""

import dagster as dg

from void_pipeline.lib.settings import settings

AUTOMATION_ON = settings().automation
SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if AUTOMATION_ON else dg.DefaultSensorStatus.STOPPED
SCHEDULE_STATUS = dg.DefaultScheduleStatus.RUNNING if AUTOMATION_ON else dg.DefaultScheduleStatus.STOPPED

# Curate again whenever an input was materialized (and none is missing or still running).
WHEN_INPUTS_CHANGE = dg.AutomationCondition.eager()
# After a new adapter only: a new chat_dataset alone (its test split) does not re-evaluate or re-merge an old one.
AFTER_NEW_ADAPTER = (
    dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets("chat_dataset")).with_label("after a new adapter")
)
# Serve a new evaluation only when every blocking check upstream (the evaluation's gates) passed.
WHEN_GATES_PASS = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager, once the gates passed")

pipeline_automation = dg.AutomationConditionSensorDefinition(
    "pipeline_automation",
    target=dg.AssetSelection.all(),
    default_status=SENSOR_STATUS,
    minimum_interval_seconds=30,
    description="Materializes what the assets' automation conditions ask for: curate after new records, evaluate "
    "after a new adapter, serve after an evaluation whose gates passed.",
)
