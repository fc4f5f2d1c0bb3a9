"""The ledger of posts that are gone upstream: the agent's own (deleted from its repo) and the other authors' posts
thread context holds (deleted, taken down, their account deactivated). On the AT Protocol a deleted post is gone for
everyone; everything downstream (thread context, the post cache, chat datasets, the adapter checks) reads this one
ledger to forget them.

One Parquet file per agent, rewritten atomically under a lock; one row per URI, the first time it was seen gone
(a later sighting never moves the date). Only URIs and reasons are kept: never the text that was deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import polars as pl

from void_pipeline.lib.files import locked, write_parquet_atomic
from void_pipeline.lib.layout import IngestPaths

Reason = Literal["deleted", "taken_down", "deactivated"]
REASONS: tuple[Reason, ...] = ("deleted", "taken_down", "deactivated")
# own_export: raw_records found the agent's record gone from its repo; recheck: thread context's re-check of the
# ancestors it holds; firehose: a delete op the live sensor saw
Source = Literal["own_export", "recheck", "firehose"]

DELETION_SCHEMA: dict[str, pl.DataType] = {
    "uri": pl.String(),
    "author_did": pl.String(),
    "own": pl.Boolean(),  # one of the agent's own posts
    "reason": pl.String(),  # REASONS
    "seen_at": pl.Datetime("us", "UTC"),  # when the pipeline first saw it gone
    "source": pl.String(),  # Source
}


@dataclass(frozen=True)
class Gone:
    uri: str
    reason: Reason
    source: Source
    own: bool
    seen_at: datetime | None = None  # None: now

    @property
    def author_did(self) -> str | None:
        parts = self.uri.removeprefix("at://").split("/")
        return parts[0] if self.uri.startswith("at://did:") and len(parts) == 3 else None


def read_deletions(paths: IngestPaths) -> pl.DataFrame:
    """The ledger (DELETION_SCHEMA); empty when nothing was ever seen gone."""
    if not paths.deletions.exists():
        return pl.DataFrame(schema=DELETION_SCHEMA)
    return pl.read_parquet(paths.deletions)


def deleted_uris(paths: IngestPaths) -> dict[str, str]:
    """uri → reason of every post in the ledger."""
    frame = read_deletions(paths)
    return dict(zip(frame["uri"].to_list(), frame["reason"].to_list(), strict=True))


def record_deletions(paths: IngestPaths, gone: Iterable[Gone]) -> int:
    """Add what is newly gone to the ledger; returns how many URIs were not in it before. A URI already there keeps
    its first sighting (date, reason and source)."""
    items = list(gone)
    for item in items:
        if item.reason not in REASONS:
            raise ValueError(f"{item.uri}: {item.reason!r} is not a deletion reason (one of {', '.join(REASONS)})")
    if not items:
        return 0
    now = datetime.now(UTC)
    with locked(paths.deletions_lock):
        before = read_deletions(paths)
        known = set(before["uri"].to_list())
        fresh = {i.uri: i for i in items if i.uri not in known}
        if not fresh:
            return 0
        added = pl.DataFrame(
            [
                {
                    "uri": i.uri,
                    "author_did": i.author_did,
                    "own": i.own,
                    "reason": i.reason,
                    "seen_at": i.seen_at or now,
                    "source": i.source,
                }
                for i in fresh.values()
            ],
            schema=DELETION_SCHEMA,
        )
        write_parquet_atomic(pl.concat([before, added]).sort("seen_at", "uri"), paths.deletions)
    return len(fresh)


def gone_since(paths: IngestPaths, uris: Iterable[str], since: datetime | None = None) -> pl.DataFrame:
    """The ledger's rows for ``uris`` (seen gone after ``since`` when given), oldest sighting first."""
    frame = read_deletions(paths).filter(pl.col("uri").is_in(pl.Series(list(uris), dtype=pl.String()).implode()))
    if since is not None:
        frame = frame.filter(pl.col("seen_at") > since)
    return frame.sort("seen_at", "uri")
