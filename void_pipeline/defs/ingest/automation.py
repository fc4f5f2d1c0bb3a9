"""raw_records refreshed by a daily schedule and by a sensor that follows the agent's repository live; the
ancestors thread_context holds re-checked daily, so that posts deleted since leave it.

Both only ask for runs of raw_records (incremental: getRepo?since=rev); the records land through the asset, never
around it. One run per collection: the CAR of a revision is downloaded once and shared by the runs side by side.
"""

import json
from collections.abc import Callable
from typing import Any

import dagster as dg
import httpx

from void_pipeline.defs.automation import SCHEDULE_STATUS, SENSOR_STATUS
from void_pipeline.defs.ingest.assets import COLLECTIONS, raw_records, thread_context
from void_pipeline.lib.ingest.export import latest_rev
from void_pipeline.lib.ingest.live import RepoChanges, read_changes
from void_pipeline.lib.ingest.xrpc import XrpcClient, XrpcError
from void_pipeline.lib.layout import AgentRecord
from void_pipeline.lib.settings import settings
from void_pipeline.resources.storage import PipelineStorage

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=[raw_records],
    executor_def=dg.in_process_executor,  # one step and its check: a process each would only add start-up time
    description="raw_records for one collection (incremental); the schedule and the sensor launch it.",
)


@dg.schedule(
    job=ingest_job,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description="Every morning, every collection of raw_records, incrementally (a run per collection).",
)
def daily_ingest(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    tick = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "manual"
    return [dg.RunRequest(run_key=f"{tick}:{c}", partition_key=c, tags={"void/trigger": "daily"}) for c in COLLECTIONS]


recheck_job = dg.define_asset_job(
    "recheck_deleted_posts_job",
    # then the adapters' deletion counts (defs/train/checks.py, by key: train imports ingest), even with automation off
    selection=dg.AssetSelection.assets(thread_context)
    | dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("lora_adapter"), "lora_adapter_deleted_examples"),
        dg.AssetCheckKey(dg.AssetKey("served_model"), "served_model_deleted_examples"),
    ),
    config={"ops": {"thread_context": {"config": {"recheck": True}}}},
    executor_def=dg.in_process_executor,
    description="thread_context with recheck: the ancestors it holds asked for again; gone ones are forgotten.",
)


@dg.schedule(
    job=recheck_job,
    cron_schedule="30 5 * * *",
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description="Every morning after the ingest: are the other authors' posts thread_context holds still there? "
    "Deleted, taken down or deactivated ones enter the deletions ledger and leave the post cache.",
)
def recheck_deleted_posts(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "manual"
    return dg.RunRequest(run_key=f"recheck:{tick}", tags={"void/trigger": "recheck"})


def sensor_cursor(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def revisions_to_export(
    record: AgentRecord, changes: RepoChanges, seq: int | None, say: Callable[[str], object]
) -> dict[str, str]:
    """The collections to export and the revision each run is keyed by. Without a cursor (the first tick, another
    agent, a quiet PDS) or when the PDS no longer holds the events after it, changes may have been missed: every
    collection is exported again, incrementally, keyed by the repo's latest revision, so nothing is lost and an
    unchanged repo launches nothing twice."""
    if catch_up := changes.catch_up_reason(resumed=seq is not None):
        say(f"every collection is caught up: {catch_up}")
        try:
            with XrpcClient(record.pds_url, timeout=10.0) as pds:
                rev = latest_rev(pds, record.did)
        except (XrpcError, httpx.HTTPError) as err:
            raise dg.Failure(f"cannot read the latest commit of {record.did} on {record.pds_url}: {err}") from err
        return {c: rev for c in COLLECTIONS}
    return {c: rev for c, rev in changes.collections.items() if c in COLLECTIONS}


# Seconds between the sensor's ticks (30 by default; the tests go faster).
LIVE_INTERVAL_S = settings().live_interval_s


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=LIVE_INTERVAL_S,
    default_status=SENSOR_STATUS,
    description="Follows the agent's repository on its PDS (com.atproto.sync.subscribeRepos) from a saved cursor, "
    "for at most 20 s a tick, and launches raw_records for each collection that changed.",
)
def agent_repo_sensor(context: dg.SensorEvaluationContext, storage: PipelineStorage) -> dg.SensorResult | dg.SkipReason:
    record = storage.agent_layout.read_record()
    if record is None or not record.pds_url:
        return dg.SkipReason("no agent recorded yet: materialize raw_records once (it resolves and records the agent)")
    cursor = sensor_cursor(context.cursor)
    seq = cursor.get("seq") if cursor.get("did") == record.did else None  # another agent: start over
    changes = read_changes(record.pds_url, record.did, seq, log=context.log.info)
    if changes.cursor is None and not changes.stopped_by.startswith("error"):
        # a quiet PDS said nothing live: read its (small) backlog from the start, to learn a cursor to follow
        changes = read_changes(record.pds_url, record.did, 0, log=context.log.info)
    if changes.stopped_by.startswith("error"):
        # the cursor stays where it was: the next tick reads the same events again
        raise dg.Failure(f"cannot follow {record.did} on {record.pds_url}: {changes.stopped_by}")
    if changes.account_status:
        context.log.warning(f"the agent's account says {changes.account_status}: exports may fail")
    wanted = revisions_to_export(record, changes, seq, context.log.info)
    ignored = sorted(set(changes.collections) - set(COLLECTIONS) - {"*"})
    if ignored:
        context.log.info(f"changes in collections not exported: {', '.join(ignored)}")
    requests = [
        # one run per collection and revision: a replayed event asks for a run that was already launched
        dg.RunRequest(run_key=f"{c}@{rev}", partition_key=c, tags={"void/trigger": "firehose"})
        for c, rev in wanted.items()
    ]
    new_cursor = json.dumps({"did": record.did, "seq": changes.cursor})
    if changes.deletes:  # a delete is a change of its collection: the run's export drops it and writes the ledger
        context.log.info(f"{changes.deletes} delete op(s) of {record.did} in {changes.commits} commit(s)")
    if not requests:
        return dg.SensorResult(
            skip_reason=f"no change to {record.did} in {changes.events} events (cursor {changes.cursor})",
            cursor=new_cursor,
        )
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)
