"""The deletions ledger: one row per URI, the first sighting kept, reasons checked, nothing of the text stored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from void_pipeline.lib.ingest.deletions import Gone, deleted_uris, gone_since, read_deletions, record_deletions
from void_pipeline.lib.layout import IngestPaths

A = "at://did:plc:aaa/app.bsky.feed.post/1"
B = "at://did:plc:bbb/app.bsky.feed.post/2"


def test_the_first_sighting_is_kept_and_later_ones_add_nothing(tmp_path: Path) -> None:
    paths = IngestPaths(tmp_path)
    assert read_deletions(paths).height == 0 and deleted_uris(paths) == {}
    first = datetime(2026, 1, 2, tzinfo=UTC)
    assert record_deletions(paths, [Gone(A, "deleted", "own_export", True, first)]) == 1
    again = [Gone(A, "taken_down", "recheck", True), Gone(B, "deactivated", "recheck", False)]
    assert record_deletions(paths, again) == 1
    assert deleted_uris(paths) == {A: "deleted", B: "deactivated"}
    rows = {r["uri"]: r for r in read_deletions(paths).iter_rows(named=True)}
    assert rows[A]["seen_at"] == first and rows[A]["source"] == "own_export" and rows[A]["own"] is True
    assert rows[B]["author_did"] == "did:plc:bbb" and rows[B]["own"] is False
    assert gone_since(paths, [A, B, "at://other"], since=first)["uri"].to_list() == [B]


def test_a_reason_outside_the_three_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    paths = IngestPaths(tmp_path)
    with pytest.raises(ValueError, match="'blocked' is not a deletion reason"):
        record_deletions(paths, [Gone(A, "blocked", "recheck", False)])  # type: ignore[arg-type]
    assert not paths.deletions.exists()
