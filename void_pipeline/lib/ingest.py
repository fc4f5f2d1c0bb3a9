"""The whole ingest outside Dagster: identity, every collection, thread context (``void-pipeline export``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from void_pipeline.lib.export import (
    CollectionExport,
    ExportOptions,
    RepoPaths,
    export_collection,
    repo_dir,
    write_parquet_atomic,
)
from void_pipeline.lib.identity import IdentityResolver
from void_pipeline.lib.records import POST
from void_pipeline.lib.resilience import ResilientHttp
from void_pipeline.lib.threads import AncestorFetcher, FetchStats, PostCache, build_thread_context, own_posts_from_rows
from void_pipeline.lib.xrpc import XrpcClient


@dataclass
class IngestSummary:
    did: str
    collections: dict[str, CollectionExport] = field(default_factory=dict)
    thread_stats: FetchStats | None = None
    replies: int = 0
    requests: dict[str, Any] = field(default_factory=dict)


def ingest_agent(
    http: ResilientHttp,
    actor: str,
    plc_url: str,
    appview_url: str | None,
    data_root: Path,
    collections: list[str],
    options: ExportOptions | None = None,
    pds_url: str | None = None,
    concurrency: int = 8,
    log: Callable[[str], None] = print,
) -> IngestSummary:
    resolver = IdentityResolver(http, plc_url, [appview_url] if appview_url else [])
    agent = resolver.resolve(actor)
    pds = XrpcClient(pds_url or agent.pds_url, client=http)
    paths = repo_dir(data_root, agent.did)
    summary = IngestSummary(agent.did)
    for collection in collections:
        summary.collections[collection] = export_collection(
            pds, agent.did, collection, paths, options or ExportOptions(), log
        )
    if POST in collections:
        context = write_thread_context(http, appview_url, resolver, paths, agent.handle, concurrency, log)
        summary.thread_stats, summary.replies = context.stats, context.replies
    summary.requests = http.stats.as_dict()
    return summary


@dataclass
class ThreadContextRun:
    frame: pl.DataFrame
    stats: FetchStats
    replies: int
    cache_size_before: int
    cache_size_after: int


def write_thread_context(
    http: ResilientHttp,
    appview_url: str | None,
    resolver: IdentityResolver,
    paths: RepoPaths,
    agent_handle: str | None,
    concurrency: int = 8,
    log: Callable[[str], None] = print,
) -> ThreadContextRun:
    """Every exported reply's ancestors (lib/threads.py), written to ``paths.thread_context``."""
    posts = pl.read_parquet(paths.records(POST))
    replies = posts.filter(pl.col("reply_parent_uri").is_not_null())
    cache = PostCache(paths.post_cache)
    before = len(cache)
    log(f"[threads] {replies.height:,} replies; post cache holds {before:,} posts from earlier runs")
    fetcher = AncestorFetcher(http, appview_url, resolver, cache, concurrency, log)
    frame = build_thread_context(replies, own_posts_from_rows(posts, agent_handle), fetcher)
    write_parquet_atomic(frame, paths.thread_context)
    return ThreadContextRun(frame, fetcher.stats, replies.height, before, len(cache))
