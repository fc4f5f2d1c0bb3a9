"""The whole ingest outside Dagster: identity, every collection, thread context (``void-pipeline export``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from void_pipeline.lib.files import acquire_owner, write_parquet_atomic
from void_pipeline.lib.ingest.deletions import deleted_uris
from void_pipeline.lib.ingest.export import (
    CollectionExport,
    ExportOptions,
    export_collection,
    read_parquet_output,
    repo_collections,
    unknown_collection_warnings,
)
from void_pipeline.lib.ingest.identity import IdentityError, IdentityResolver
from void_pipeline.lib.ingest.records import POST, require_collection
from void_pipeline.lib.ingest.resilience import ResilientHttp, TransportFailure
from void_pipeline.lib.ingest.threads import (
    AncestorFetcher,
    FetchStats,
    PostCache,
    RecheckStats,
    build_thread_context,
    own_posts_from_rows,
    recheck_ancestors,
)
from void_pipeline.lib.ingest.xrpc import XrpcClient, XrpcError
from void_pipeline.lib.layout import AgentLayout, AgentRecord, IngestPaths


@dataclass
class IngestSummary:
    did: str
    collections: dict[str, CollectionExport] = field(default_factory=dict)
    thread_stats: FetchStats | None = None
    replies: int = 0
    requests: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def ingest_agent(
    http: ResilientHttp,
    actor: str,
    plc_url: str,
    appview_url: str | None,
    layout: AgentLayout,
    collections: list[str],
    options: ExportOptions | None = None,
    pds_url: str | None = None,
    concurrency: int = 8,
    log: Callable[[str], None] = print,
) -> IngestSummary:
    for collection in collections:
        require_collection(collection)
    resolver = IdentityResolver(http, plc_url, [appview_url] if appview_url else [])
    agent = resolver.resolve(actor)
    pds_url = pds_url or agent.pds_url
    pds = XrpcClient(pds_url, client=http)
    paths = layout.ingest
    summary = IngestSummary(agent.did)
    if (change := record_agent(layout, agent.did, agent.handle, pds_url, plc_url)) is not None:
        log(f"warning: {change}")
        summary.warnings.append(change)
        options = replace(options or ExportOptions(), full_refresh=True)
    for warning in unknown_collection_warnings(collections, repo_collections(pds, agent.did)):
        log(f"warning: {warning}")
        summary.warnings.append(warning)
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
    recheck: RecheckStats | None = None  # when the run re-checked the ancestors it holds


def write_thread_context(
    http: ResilientHttp,
    appview_url: str | None,
    resolver: IdentityResolver,
    paths: IngestPaths,
    agent_handle: str | None,
    concurrency: int = 8,
    log: Callable[[str], None] = print,
    recheck: bool = False,
) -> ThreadContextRun:
    """Every exported reply's ancestors (lib/ingest/threads.py), written to ``paths.thread_context`` by one writer at a
    time (a second one raises ``Busy`` naming the first). ``recheck``: first ask again whether the ancestors held
    are still there (recheck_ancestors)."""
    with acquire_owner(paths.thread_context_lock, "building thread context", "the thread context"):
        return _write_thread_context(http, appview_url, resolver, paths, agent_handle, concurrency, log, recheck)


def _write_thread_context(
    http: ResilientHttp,
    appview_url: str | None,
    resolver: IdentityResolver,
    paths: IngestPaths,
    agent_handle: str | None,
    concurrency: int,
    log: Callable[[str], None],
    recheck: bool,
) -> ThreadContextRun:
    posts = read_parquet_output(paths.records(POST), f"export {POST} again with a full refresh")
    replies = posts.filter(pl.col("reply_parent_uri").is_not_null())
    cache = PostCache(paths.post_cache)
    if cache.discarded:
        log(f"warning: {cache.discarded}")
    before = len(cache)
    log(f"[threads] {replies.height:,} replies; post cache holds {before:,} posts from earlier runs")
    fetcher = AncestorFetcher(http, appview_url, resolver, cache, concurrency, log)
    agent_did = str(posts["did"][0]) if posts.height else None
    checked = recheck_ancestors(fetcher, agent_did or "", paths, log) if recheck else None
    gone = deleted_uris(paths)
    cache.forget(gone)  # whatever the ledger holds (the agent's own deletions too) keeps no text in the cache
    name = profile_display_name(http, resolver, agent_did) if agent_did else None
    frame = build_thread_context(replies, own_posts_from_rows(posts, agent_handle, name), fetcher, gone=gone)
    write_parquet_atomic(frame, paths.thread_context)
    return ThreadContextRun(frame, fetcher.stats, replies.height, before, len(cache), checked)


def record_agent(layout: AgentLayout, did: str, handle: str | None, pds_url: str, plc_url: str) -> str | None:
    """Write who the agent's name resolves to (agent.json); when that is another DID than before, say so: the
    caller refreshes every collection in full instead of diffing against another repo's revision."""
    before = layout.read_record()
    layout.write_record(AgentRecord.now(layout.name, did, handle, pds_url, plc_url))
    if before is None or before.did == did:
        return None
    return (
        f"agent {layout.name!r} now resolves to {did} (was {before.did}, handle {before.handle}): "
        "its export is refreshed in full; curate and train again to follow"
    )


def profile_display_name(http: ResilientHttp, resolver: IdentityResolver, did: str) -> str | None:
    """The display name in an account's profile record (``app.bsky.actor.profile/self``), or None without one."""
    try:
        pds = XrpcClient(resolver.identity(did).pds_url, client=http)
        value = pds.query("com.atproto.repo.getRecord", repo=did, collection="app.bsky.actor.profile", rkey="self")
    except (XrpcError, TransportFailure, IdentityError):
        return None
    name = (value.get("value") or {}).get("displayName") if isinstance(value, dict) else None
    return name if isinstance(name, str) and name.strip() else None
