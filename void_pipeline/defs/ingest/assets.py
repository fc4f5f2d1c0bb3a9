"""raw_records (one partition per collection) and thread_context: thin wrappers over lib/export and lib/threads."""

from datetime import timedelta
from typing import Literal

import dagster as dg
import polars as pl

from void_pipeline.defs.agent import resolve_agent
from void_pipeline.defs.automation import WHEN_INPUTS_CHANGE
from void_pipeline.defs.metadata import OWNERS, as_metadata, table_preview, table_schema
from void_pipeline.lib.files import Busy
from void_pipeline.lib.ingest.agent import write_thread_context
from void_pipeline.lib.ingest.export import (
    CorruptState,
    ExportOptions,
    export_collection,
    repo_collections,
    unknown_collection_warnings,
)
from void_pipeline.lib.ingest.metadata import PREVIEW_COLUMNS, export_metadata, thread_context_metadata
from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.ingest.resilience import TransportFailure
from void_pipeline.lib.settings import settings
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage

# The collections to export; VOID_COLLECTIONS (comma-separated NSIDs, checked) replaces the default four.
COLLECTIONS = list(settings().collections)
collection_partitions = dg.StaticPartitionsDefinition(COLLECTIONS)


class RawRecordsConfig(dg.Config):
    method: Literal["car", "list_records"] = "car"
    """car: one getRepo download per revision, shared by all partitions; list_records: 100 per page, resumable."""
    incremental: bool = True
    """Fetch only what changed since the last materialization (getRepo?since=rev)."""
    full_refresh: bool = False
    """Export everything again; records deleted upstream leave the table (counted in metadata)."""
    fallback: bool = True
    """Switch to listRecords automatically when the CAR path fails."""


@dg.asset(
    partitions_def=collection_partitions,
    group_name="ingest",
    owners=OWNERS,
    kinds={"atproto", "polars", "parquet"},
    # the agent posts all day: an export older than a day misses a day of its voice
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=1)),
    description="Every record of one collection of the agent's repo, one row each; malformed ones quarantined.",
)
def raw_records(
    context: dg.AssetExecutionContext, config: RawRecordsConfig, endpoint: AtprotoEndpoint, storage: PipelineStorage
) -> dg.MaterializeResult:
    collection = context.partition_key
    with endpoint.http() as http:
        _, agent, changed = resolve_agent(context, endpoint, storage, http)
        context.log.info(f"exporting {collection} of {agent.handle or agent.did} ({agent.did}) from {agent.pds_url}")
        paths = storage.agent_layout.ingest
        pds = endpoint.pds(agent, http)
        full_refresh = config.full_refresh or changed  # another DID: nothing of the earlier export applies
        options = ExportOptions(config.method, config.incremental, full_refresh, config.fallback)
        try:
            unknown = unknown_collection_warnings([collection], repo_collections(pds, agent.did))
            for warning in unknown:
                context.log.warning(warning)
            result = export_collection(pds, agent.did, collection, paths, options, context.log.info)
        except (CorruptState, Busy) as err:
            raise dg.Failure(str(err), allow_retries=False) from err
        except TransportFailure as err:  # the PDS (VOID_PDS_URL or the DID document's) is down: say which
            raise endpoint.failure(err) from err
        requests = http.stats.as_dict()
    frame = pl.read_parquet(paths.records(collection))
    context.log.info(
        f"{collection}: {result.fetched:,} fetched = {result.kept:,} kept + {result.quarantined:,} quarantined; "
        f"table now {result.total_rows:,} rows ({result.new:,} new) via {result.method}"
    )
    return dg.MaterializeResult(
        metadata={
            **as_metadata(export_metadata(result, requests, agent.did, collection, unknown, paths)),
            "dagster/column_schema": table_schema(frame),
            "preview": table_preview(frame.sort("created_at", descending=True), PREVIEW_COLUMNS),
        }
    )


class ThreadContextConfig(dg.Config):
    recheck: bool = False
    """First ask again whether the ancestors held are still there (batched getPosts): gone ones enter the deletions
    ledger and leave the post cache; a run stopped by rate limits resumes there next time."""


@dg.asset(
    deps=[dg.AssetDep(raw_records, partition_mapping=dg.SpecificPartitionsPartitionMapping([POST]))],
    group_name="ingest",
    owners=OWNERS,
    kinds={"atproto", "polars", "parquet"},
    description="For every reply of the agent, its ancestor chain up to the thread root (root first).",
    automation_condition=WHEN_INPUTS_CHANGE,
)
def thread_context(
    context: dg.AssetExecutionContext, config: ThreadContextConfig, endpoint: AtprotoEndpoint, storage: PipelineStorage
) -> dg.MaterializeResult:
    with endpoint.http() as http:
        resolver, agent, _ = resolve_agent(context, endpoint, storage, http)
        paths = storage.agent_layout.ingest
        if not paths.records(POST).exists():
            raise dg.Failure(f"raw_records[{POST}] has not been materialized for {agent.did}: materialize it first")
        try:
            run = write_thread_context(
                http,
                endpoint.appview_url,
                resolver,
                paths,
                agent.handle,
                endpoint.concurrency,
                context.log.info,
                recheck=config.recheck,
            )
        except (CorruptState, Busy) as err:
            raise dg.Failure(str(err), allow_retries=False) from err
        resolver.save()
        requests = http.stats.as_dict()
    if run.recheck is not None and run.recheck.stopped_by:
        context.log.warning(f"the re-check stopped early, the next one resumes there: {run.recheck.stopped_by}")
    return dg.MaterializeResult(
        metadata={
            **as_metadata(thread_context_metadata(run, requests, paths)),
            "dagster/column_schema": table_schema(run.frame),
        }
    )
