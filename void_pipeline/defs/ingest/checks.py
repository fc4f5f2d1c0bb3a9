"""Checks on the export: what a trainer downstream relies on."""

import dagster as dg
import polars as pl

from void_pipeline.defs.agent import agent_paths
from void_pipeline.defs.ingest.assets import raw_records, thread_context
from void_pipeline.lib.records import POST
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage


@dg.asset_check(asset=raw_records, blocking=True, description="Each record appears once (no duplicated URIs).")
def raw_records_unique_uris(
    context: dg.AssetCheckExecutionContext, endpoint: AtprotoEndpoint, storage: PipelineStorage
) -> dg.AssetCheckResult:
    paths = agent_paths(endpoint, storage)
    duplicates = {}
    for path in sorted(paths.root.glob("raw_records/*.parquet")):
        if path.name.endswith(".rejected.parquet"):
            continue
        frame = pl.read_parquet(path, columns=["uri"])
        duplicates[path.stem] = frame.height - frame["uri"].n_unique()
    return dg.AssetCheckResult(passed=not any(duplicates.values()), metadata={"duplicates": duplicates})


@dg.asset_check(asset=thread_context, blocking=True, description="Every reply of the agent has a context row.")
def thread_context_covers_every_reply(
    context: dg.AssetCheckExecutionContext, endpoint: AtprotoEndpoint, storage: PipelineStorage
) -> dg.AssetCheckResult:
    paths = agent_paths(endpoint, storage)
    replies = pl.read_parquet(paths.records(POST), columns=["uri", "reply_parent_uri"]).filter(
        pl.col("reply_parent_uri").is_not_null()
    )
    covered = pl.read_parquet(paths.thread_context, columns=["uri"])
    missing = replies.join(covered, on="uri", how="anti").height
    return dg.AssetCheckResult(passed=missing == 0, metadata={"replies": replies.height, "missing": missing})
