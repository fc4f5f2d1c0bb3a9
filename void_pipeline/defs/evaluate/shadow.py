"""shadow_replies: each UTC day's replies of the agent answered by the served model and the candidate beside it, as
the runtime asked them, through a vLLM server started for the step; nothing is posted. The shadow job (with the
report that reads it), its daily schedule and the sensor that shadows today sooner."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.automation import SCHEDULE_STATUS, SENSOR_STATUS
from void_pipeline.defs.curate.assets import read_input
from void_pipeline.defs.evaluate.assets import generate_on_vllm
from void_pipeline.defs.evaluate.shadow_days import shadow_days
from void_pipeline.defs.external import GPU_STEP_TAGS
from void_pipeline.defs.ingest.assets import raw_records, thread_context
from void_pipeline.defs.metadata import OWNERS, as_metadata
from void_pipeline.lib.evaluate.generations import generate
from void_pipeline.lib.evaluate.shadow import (
    NO_BUNDLE,
    DayTurns,
    ShadowModels,
    day_settings,
    day_turns,
    keep_turns,
    pending,
    shadow_metadata,
    shadow_models,
    sooner,
    start_day,
    write_skipped,
)
from void_pipeline.lib.files import write_parquet_atomic
from void_pipeline.lib.handoffs import HandoffError
from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.ingest.threads import THREAD_SCHEMA
from void_pipeline.lib.layout import AgentLayout
from void_pipeline.lib.serve.bundle import Bundle, BundleError, current_version
from void_pipeline.resources.server import InferenceServer
from void_pipeline.resources.storage import PipelineStorage


class ShadowRepliesConfig(dg.Config):
    concurrency: int = Field(default=8, description="requests in flight (one model at a time)")


@dg.asset(
    partitions_def=shadow_days,
    deps=[
        dg.AssetDep(raw_records, partition_mapping=dg.SpecificPartitionsPartitionMapping([POST])),  # the posts
        thread_context,
        "served_model",  # answered by the model served_model made current
    ],
    group_name="evaluate",
    owners=OWNERS,
    kinds={"vllm"},
    pool="gpu",
    op_tags=GPU_STEP_TAGS,
    description="The day's replies of the agent (UTC), each asked as the runtime asked it (the serving bundle's "
    "prompt template, handler and request profile) and answered by the served model ('production') and the "
    "candidate through vLLM; resumable; nothing is posted.",
)
def shadow_replies(
    context: dg.AssetExecutionContext, config: ShadowRepliesConfig, storage: PipelineStorage, server: InferenceServer
) -> dg.MaterializeResult:
    day, layout = context.partition_key, storage.agent_layout
    paths = layout.shadow.day(day)
    models = served_models(layout)
    if models is None:
        write_skipped(paths, NO_BUNDLE)
        context.log.warning(f"{day}: skipped: {NO_BUNDLE}")
        return dg.MaterializeResult(metadata={"day": day, "skipped": f"skipped: {NO_BUNDLE}"})
    turns = read_day(storage, models.bundle, day)
    if start_day(paths, day_settings(models, day)):
        context.log.info(f"{day}: another model set than the day's answers: they are removed, the day starts afresh")
    write_parquet_atomic(turns.turns, paths.replies)
    prompts, sampling, request = turns.prompts(), models.bundle.sampling, models.bundle.request()
    context.log.info(f"{day}: {turns.turns.height} turns x {models.names}; {models.described()}")
    started = time.monotonic()
    if pending(paths, prompts, models.names, sampling.samples):
        dtype, env, arguments = server.engine()
        spec = models.server_spec(dtype, env, server.context_length(), tuple(arguments))
        run = generate_on_vllm(
            context, server, spec, paths, request, models.names, prompts, sampling, config.concurrency
        )
        server_s: float | None = time.monotonic() - started - run.seconds
    else:  # every answer is there (or there is nothing to answer): no server, no request; the table is written
        run = generate(paths, "", "", models.names, request, prompts, sampling, log=context.log.info)
        server_s = None
    run = keep_turns(run, paths, turns.turns)
    return dg.MaterializeResult(metadata=as_metadata(shadow_metadata(turns, models, run, paths, server_s)))


def served_models(layout: AgentLayout) -> ShadowModels | None:
    """Who answers (None: no bundle is current); a damaged bundle or evaluation pointer fails naming the file."""
    try:
        return shadow_models(layout.serve, layout.evaluate.read_latest())
    except (BundleError, HandoffError) as err:
        raise dg.Failure(str(err), allow_retries=False) from err


def read_day(storage: PipelineStorage, bundle: Bundle, day: str) -> DayTurns:
    """The day's turns from raw_records' posts and thread_context (none yet: every reply is named as missing)."""
    record, layout = recorded_agent(storage)
    posts_path, context_path = layout.ingest.records(POST), layout.ingest.thread_context
    if not posts_path.exists():
        raise dg.Failure(f"raw_records[{POST}] is missing ({posts_path}): materialize it first", allow_retries=False)
    posts = read_input(posts_path, f"raw_records[{POST}] with full_refresh: true")
    rows = read_input(context_path, "thread_context") if context_path.exists() else pl.DataFrame(schema=THREAD_SCHEMA)
    try:
        template, handler = bundle.prompt_template(), bundle.request().handler
        return day_turns(posts, rows, template, record.did, record.handle, handler, day)
    except ValueError as err:  # a bad day, a bundle without its template, a template that cannot show threads
        raise dg.Failure(str(err), allow_retries=False) from err


# --- automation ---------------------------------------------------------------------------------------------

shadow_job = dg.define_asset_job(
    "shadow_job",
    # shadow_replies and the report that reads it (shadow_report): selected through the graph, not imported
    selection=dg.AssetSelection.assets(shadow_replies).downstream(depth=1),
    description="One day's shadow run: the agent's replies answered by the served model and the candidate, then the "
    "day's report.",
)


def not_served(storage: PipelineStorage) -> str | None:
    """Why a shadow run would be skipped (no bundle is current, or its pointer is damaged), or None."""
    try:
        return None if current_version(storage.agent_layout.serve) is not None else f"skipped: {NO_BUNDLE}"
    except BundleError as err:
        return str(err)


@dg.schedule(
    job=shadow_job,
    cron_schedule="30 6 * * *",
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description="Every morning after daily_ingest (05:00 UTC) and the thread_context it brings: the previous UTC "
    "day's shadow run (skipped while no model is served).",
)
def shadow_daily(context: dg.ScheduleEvaluationContext, storage: PipelineStorage) -> dg.RunRequest | dg.SkipReason:
    if why := not_served(storage):
        return dg.SkipReason(why)
    tick = context.scheduled_execution_time or datetime.now(UTC)
    day = (tick.astimezone(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"shadow-{day}", partition_key=day, tags={"void/trigger": "shadow_daily"})


@dg.sensor(
    job=shadow_job,
    minimum_interval_seconds=300,
    default_status=SENSOR_STATUS,
    description="Today's shadow run sooner: after thread_context was materialized again (the firehose sensor's "
    "raw_records runs bring it), at most one run an hour; changes within the hour wait for the next.",
)
def shadow_sooner(context: dg.SensorEvaluationContext, storage: PipelineStorage) -> dg.SensorResult | dg.SkipReason:
    event = context.instance.get_latest_materialization_event(thread_context.key)
    if event is None:
        return dg.SkipReason("thread_context was never materialized: nothing to shadow")
    chosen = sooner(context.cursor, f"{event.run_id}@{event.timestamp}", datetime.now(UTC))
    if isinstance(chosen, str):
        return dg.SkipReason(chosen)
    if why := not_served(storage):
        return dg.SkipReason(why)
    day, run_key, cursor = chosen
    request = dg.RunRequest(run_key=run_key, partition_key=day, tags={"void/trigger": "shadow_sooner"})
    return dg.SensorResult([request], cursor=cursor)
