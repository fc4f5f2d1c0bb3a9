"""Deletions seen at ingest, without a network: the export's merge drops what is gone, the post cache forgets a
post's text from its file, a damaged re-check checkpoint starts over, a delete-only firehose commit asks for a run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from atproto_client.models.com.atproto.sync import subscribe_repos

from void_pipeline.defs.ingest.automation import revisions_to_export
from void_pipeline.lib.ingest.export import CollectionExport, merge_rows
from void_pipeline.lib.ingest.live import RepoChanges
from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.ingest.threads import PostCache, post_from_record, read_recheck_checkpoint
from void_pipeline.lib.layout import AgentRecord, IngestPaths

DID = "did:plc:agent"


def rows(*rkeys: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "uri": [f"at://{DID}/{POST}/{r}" for r in rkeys],
            "cid": [f"cid-{r}" for r in rkeys],
            "created_at": [datetime(2026, 1, int(r), tzinfo=UTC) for r in rkeys],
        }
    )


def test_an_incremental_merge_drops_the_gone_uris_and_names_them() -> None:
    existing, fresh = rows("1", "2", "3"), rows("4")
    result = CollectionExport(DID, POST, "car", "rev", full=False)
    gone = {f"at://{DID}/{POST}/2", f"at://{DID}/{POST}/9"}  # 9: never in the table
    merged = merge_rows(existing, fresh, result, full=False, gone=gone)
    assert merged["uri"].to_list() == [f"at://{DID}/{POST}/{r}" for r in ("1", "3", "4")]
    assert (result.new, result.removed, result.removed_uris) == (1, 1, [f"at://{DID}/{POST}/2"])


def test_a_full_merge_names_what_the_repo_no_longer_holds() -> None:
    result = CollectionExport(DID, POST, "car", "rev", full=True)
    merged = merge_rows(rows("1", "2", "3"), rows("1", "3"), result, full=True)
    assert merged.height == 2 and result.removed_uris == [f"at://{DID}/{POST}/2"]


def test_the_post_cache_forgets_the_text_in_its_file_not_just_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "post_cache.jsonl"
    cache = PostCache(path)
    gone_uri, kept_uri = "at://did:plc:other/app.bsky.feed.post/a", "at://did:plc:other/app.bsky.feed.post/b"
    record = {"text": "a secret someone deleted", "createdAt": "2026-01-01T00:00:00Z"}
    cache.add([post_from_record(gone_uri, "c1", record, "did:plc:other", "o.test", "appview")])
    cache.add([post_from_record(kept_uri, "c2", {"text": "still here"}, "did:plc:other", "o.test", "appview")])
    assert cache.forget({gone_uri: "deleted", "at://did:plc:x/app.bsky.feed.post/never": "deleted"}) == 1
    assert "a secret someone deleted" not in path.read_text() and "still here" in path.read_text()
    reread = PostCache(path)
    forgotten = reread.get(gone_uri)
    assert forgotten is not None and (forgotten.available, forgotten.reason, forgotten.text) == (False, "deleted", None)
    assert cache.forget({gone_uri: "deleted"}) == 0  # already forgotten: the file is not rewritten again


def test_a_damaged_recheck_checkpoint_starts_the_recheck_over(tmp_path: Path) -> None:
    paths = IngestPaths(tmp_path)
    assert read_recheck_checkpoint(paths) is None
    paths.recheck_checkpoint.parent.mkdir(parents=True)
    paths.recheck_checkpoint.write_text('{"after": "at://did:plc:o/app.bsky.feed.post/x"}')
    assert read_recheck_checkpoint(paths) == "at://did:plc:o/app.bsky.feed.post/x"
    paths.recheck_checkpoint.write_text("[1, 2")
    assert read_recheck_checkpoint(paths) is None


def test_a_delete_only_commit_asks_for_a_run_of_its_collection_and_is_counted() -> None:
    changes = RepoChanges(did=DID, cursor=10)
    commit = subscribe_repos.Commit.model_construct(
        repo=DID,
        rev="3lrevdelete2a",
        seq=11,
        ops=[subscribe_repos.RepoOp(action="delete", path=f"{POST}/3labc")],
    )
    changes.take(commit)
    record = AgentRecord.now("void", DID, "void.test", "http://127.0.0.1:1", "http://127.0.0.1:2")
    assert (changes.deletes, changes.commits, changes.cursor) == (1, 1, 11)
    assert revisions_to_export(record, changes, seq=10, say=print) == {POST: "3lrevdelete2a"}
