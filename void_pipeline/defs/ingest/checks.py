"""Checks on the export: what a trainer downstream relies on."""

import dagster as dg
import polars as pl

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.ingest.assets import COLLECTIONS, raw_records, thread_context
from void_pipeline.lib.ingest.records import POST
from void_pipeline.resources.storage import PipelineStorage


@dg.asset_check(asset=raw_records, blocking=True, description="Each record appears once (no duplicated URIs).")
def raw_records_unique_uris(context: dg.AssetCheckExecutionContext, storage: PipelineStorage) -> dg.AssetCheckResult:
    paths = recorded_agent(storage)[1].ingest
    # The partition this run materialized; a run without one (a whole backfill in one run) checks them all.
    collections = [context.partition_key] if context.has_partition_key else list(COLLECTIONS)
    duplicates = {}
    for collection in collections:
        if not paths.records(collection).exists():
            continue
        frame = pl.read_parquet(paths.records(collection), columns=["uri"])
        duplicates[collection] = frame.height - frame["uri"].n_unique()
    return dg.AssetCheckResult(passed=not any(duplicates.values()), metadata={"duplicates": duplicates})


@dg.asset_check(asset=thread_context, blocking=True, description="Every reply of the agent has a context row.")
def thread_context_covers_every_reply(
    context: dg.AssetCheckExecutionContext, storage: PipelineStorage
) -> dg.AssetCheckResult:
    paths = recorded_agent(storage)[1].ingest
    replies = pl.read_parquet(paths.records(POST), columns=["uri", "reply_parent_uri"]).filter(
        pl.col("reply_parent_uri").is_not_null()
    )
    covered = pl.read_parquet(paths.thread_context, columns=["uri"])
    missing = replies.join(covered, on="uri", how="anti").height
    return dg.AssetCheckResult(passed=missing == 0, metadata={"replies": replies.height, "missing": missing})
