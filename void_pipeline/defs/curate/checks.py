"""Blocking checks before money is spent on training: clean filters, no split leak, valid tool calls."""

from pathlib import Path

import dagster as dg
import polars as pl

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.curate.assets import chat_dataset, filtered_records
from void_pipeline.defs.ingest.assets import COLLECTIONS
from void_pipeline.lib.curate.dataset import FORMATS, leaked_roots, tool_call_errors
from void_pipeline.lib.curate.filters import LoopDetector, rules_for, unclean_filter_output
from void_pipeline.lib.layout import DatasetPaths
from void_pipeline.resources.storage import PipelineStorage


@dg.asset_check(
    asset=filtered_records,
    blocking=True,
    description="No loop content, malformed call or duplicate left (the collection's rules); kept + rejected = input.",
)
def filtered_records_are_clean(context: dg.AssetCheckExecutionContext, storage: PipelineStorage) -> dg.AssetCheckResult:
    layout = recorded_agent(storage)[1]
    detector = LoopDetector()
    problems: dict[str, str] = {}
    # The partition this run materialized: a stale sibling never fails a fresh one. Without one, all of them.
    collections = [context.partition_key] if context.has_partition_key else list(COLLECTIONS)
    for collection in collections:
        kept_path = layout.curate.filtered_records(collection)
        if not kept_path.exists():
            problems[collection] = f"{kept_path} is missing" if context.has_partition_key else ""
            continue
        kept = pl.read_parquet(kept_path)
        rejected = pl.read_parquet(layout.curate.filtered_rejected(collection))
        raw = pl.read_parquet(layout.ingest.records(collection), columns=["uri"])
        if problem := unclean_filter_output(kept, rejected, raw, rules_for(collection), detector):
            problems[collection] = problem
    problems = {c: p for c, p in problems.items() if p}
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": problems or "none"})


def dataset_dirs(storage: PipelineStorage) -> list[Path]:
    curate = recorded_agent(storage)[1].curate
    return [curate.chat_dataset(f) for f in FORMATS if DatasetPaths(curate.chat_dataset(f)).index.exists()]


@dg.asset_check(asset=chat_dataset, blocking=True, description="No thread root appears in two splits.")
def chat_dataset_has_no_split_leak(storage: PipelineStorage) -> dg.AssetCheckResult:
    leaks: dict[str, list[str]] = {}
    for folder in dataset_dirs(storage):
        leaked = leaked_roots(pl.read_parquet(DatasetPaths(folder).index))
        if leaked:
            leaks[folder.name] = leaked[:10]
    return dg.AssetCheckResult(passed=not leaks, metadata={"leaked_roots": leaks or "none"})


@dg.asset_check(
    asset=chat_dataset,
    blocking=True,
    description="Every assistant turn is one or more valid add_post_to_bluesky_reply_thread calls (text ≤ 300).",
)
def chat_dataset_tool_calls_are_valid(storage: PipelineStorage) -> dg.AssetCheckResult:
    checked, errors = 0, list[str]()
    for folder in dataset_dirs(storage):
        calls, problems = tool_call_errors(folder, folder.name)
        checked, errors = checked + calls, errors + problems
    return dg.AssetCheckResult(passed=not errors and checked > 0, metadata={"calls": checked, "errors": errors[:20]})
