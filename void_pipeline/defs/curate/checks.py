"""Blocking checks before money is spent on training: clean filters, no split leak, valid tool calls."""

from pathlib import Path

import dagster as dg
import polars as pl

from void_pipeline.defs.agent import agent_identity
from void_pipeline.defs.curate.assets import chat_dataset, filtered_records
from void_pipeline.defs.ingest.assets import COLLECTIONS
from void_pipeline.lib.dataset import FORMATS, leaked_roots, tool_call_errors
from void_pipeline.lib.filters import LoopDetector
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage


@dg.asset_check(
    asset=filtered_records,
    blocking=True,
    description="No loop content and no duplicate text left; kept + rejected = input, for every collection.",
)
def filtered_records_are_clean(
    context: dg.AssetCheckExecutionContext, endpoint: AtprotoEndpoint, storage: PipelineStorage
) -> dg.AssetCheckResult:
    did = agent_identity(endpoint, storage).did
    folder = storage.curate(did) / "filtered_records"
    detector = LoopDetector()
    problems: dict[str, str] = {}
    # The partition this run materialized: a stale sibling never fails a fresh one. Without one, all of them.
    collections = [context.partition_key] if context.has_partition_key else list(COLLECTIONS)
    for collection in collections:
        kept_path = folder / f"{collection}.parquet"
        if not kept_path.exists():
            problems[collection] = f"{kept_path} is missing" if context.has_partition_key else ""
            continue
        kept = pl.read_parquet(kept_path)
        rejected = pl.read_parquet(folder / f"{collection}.rejected.parquet")
        raw = pl.read_parquet(storage.repo(did).records(collection), columns=["uri"])
        loops = sum(detector.why(t) is not None for t in kept["text_norm"].to_list())
        duplicates = kept.height - kept["text_norm"].n_unique()
        accounted = kept.height + rejected.height == raw.height and set(kept["uri"]) | set(rejected["uri"]) == set(
            raw["uri"]
        )
        if loops or duplicates or not accounted:
            problems[collection] = f"loop {loops}, duplicates {duplicates}, accounted {accounted}"
    problems = {c: p for c, p in problems.items() if p}
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": problems or "none"})


def dataset_dirs(storage: PipelineStorage, did: str) -> list[Path]:
    root = storage.curate(did) / "chat_dataset"
    return [root / f for f in FORMATS if (root / f / "index.parquet").exists()]


@dg.asset_check(asset=chat_dataset, blocking=True, description="No thread root appears in two splits.")
def chat_dataset_has_no_split_leak(endpoint: AtprotoEndpoint, storage: PipelineStorage) -> dg.AssetCheckResult:
    leaks: dict[str, list[str]] = {}
    for folder in dataset_dirs(storage, agent_identity(endpoint, storage).did):
        leaked = leaked_roots(pl.read_parquet(folder / "index.parquet"))
        if leaked:
            leaks[folder.name] = leaked[:10]
    return dg.AssetCheckResult(passed=not leaks, metadata={"leaked_roots": leaks or "none"})


@dg.asset_check(
    asset=chat_dataset,
    blocking=True,
    description="Every assistant turn is one or more valid add_post_to_bluesky_reply_thread calls (text ≤ 300).",
)
def chat_dataset_tool_calls_are_valid(endpoint: AtprotoEndpoint, storage: PipelineStorage) -> dg.AssetCheckResult:
    checked, errors = 0, list[str]()
    for folder in dataset_dirs(storage, agent_identity(endpoint, storage).did):
        calls, problems = tool_call_errors(folder, folder.name)
        checked, errors = checked + calls, errors + problems
    return dg.AssetCheckResult(passed=not errors and checked > 0, metadata={"calls": checked, "errors": errors[:20]})
