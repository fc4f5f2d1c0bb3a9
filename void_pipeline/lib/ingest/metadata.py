"""What an export shows in the UI: plain values (defs/metadata.as_metadata shows them; the table schema and
preview are Dagster's own and added there)."""

from __future__ import annotations

from typing import Any

import polars as pl

from void_pipeline.lib.ingest.agent import ThreadContextRun
from void_pipeline.lib.ingest.export import CollectionExport
from void_pipeline.lib.ingest.threads import RecheckStats
from void_pipeline.lib.layout import IngestPaths
from void_pipeline.lib.report import Markdown, counts_table

PREVIEW_COLUMNS = ["created_at", "text", "reply_parent_uri", "uri"]  # raw_records' preview: the newest rows


def export_metadata(
    result: CollectionExport,
    requests: dict[str, Any],
    did: str,
    collection: str,
    unknown: list[str],
    paths: IngestPaths,
) -> dict[str, Any]:
    return {
        "dagster/row_count": result.total_rows,
        "rows_new": result.new,
        "rows_changed": result.changed,
        "rows_removed_upstream": result.removed,
        "removed_uris": Markdown("\n".join(f"- `{u}`" for u in result.removed_uris[:5]) or "_none_"),
        "fetched_this_run": result.fetched,
        "quarantined_this_run": result.quarantined,
        "quarantined_total": result.total_rejected,
        "quarantined_by_reason": Markdown(counts_table(result.rejected_by_reason)),
        "method": result.method,
        "fallback_reason": result.fallback_reason or "",
        "incremental": not result.full,
        "repo_rev": result.rev or "",
        "car_bytes": result.car_bytes,
        "car_downloaded_this_run": result.car_downloaded,
        "http_requests": requests["requests"],
        "http_retries": requests["retries"],
        "http_rate_limited": requests["rate_limited"],
        "agent_did": did,
        "collection_warning": unknown[0] if unknown else "",
        "path": paths.records(collection),
        "rejected_path": paths.rejected(collection),
    }


def deepest_chain(frame: pl.DataFrame) -> Markdown:
    """The longest ancestor chain of the thread context, root first: who said what above the agent's reply."""
    example = frame.sort("depth", descending=True).head(1)
    chain = example["ancestors"].to_list()[0] if example.height else []
    lines = [
        f"{i}. **@{a['author_handle'] or a['author_did']}**: {a['text'] or '(' + str(a['reason']) + ')'}"
        for i, a in enumerate(chain, 1)
    ]
    return Markdown("\n".join(lines) or "_no replies_")


def thread_context_metadata(run: ThreadContextRun, requests: dict[str, Any], paths: IngestPaths) -> dict[str, Any]:
    frame, stats = run.frame, run.stats
    complete = int(frame["complete"].sum()) if frame.height else 0
    depths = frame["depth"]
    return {
        "dagster/row_count": frame.height,
        "replies": run.replies,
        "complete_chains": complete,
        "complete_share": round(complete / frame.height, 4) if frame.height else 0.0,
        "depth_p50": int(depths.quantile(0.5) or 0) if frame.height else 0,
        "depth_p95": int(depths.quantile(0.95) or 0) if frame.height else 0,
        "depth_max": int(depths.cast(pl.Int64).max() or 0) if frame.height else 0,  # type: ignore[arg-type]
        "unavailable_ancestors": Markdown(counts_table(dict(stats.unavailable))),
        "levels": stats.levels,
        "get_posts_calls": stats.get_posts_calls,
        "get_record_calls": stats.get_record_calls,
        "ancestors_from_export": stats.from_export,
        "ancestors_from_cache": stats.from_cache,
        "ancestors_fetched": stats.fetched,
        "http_requests": requests["requests"],
        "post_cache_size": run.cache_size_after,
        "path": paths.thread_context,
        "deepest_chain": deepest_chain(frame),
        **(recheck_metadata(run.recheck) if run.recheck is not None else {}),
    }


def recheck_metadata(recheck: RecheckStats) -> dict[str, Any]:
    return {
        "recheck_ancestors_held": recheck.held,
        "recheck_ancestors_checked": recheck.checked,
        "recheck_get_posts_calls": recheck.get_posts_calls,
        "recheck_get_record_calls": recheck.get_record_calls,
        "recheck_http_requests": recheck.requests,
        "recheck_requests_per_1000_ancestors": recheck.requests_per_1000,
        "recheck_newly_gone": Markdown(counts_table(dict(recheck.gone))),
        "recheck_unanswered": recheck.unanswered,
        "recheck_resumed": recheck.resumed,
        "recheck_finished": recheck.finished,
        "recheck_stopped_by": recheck.stopped_by,
    }
