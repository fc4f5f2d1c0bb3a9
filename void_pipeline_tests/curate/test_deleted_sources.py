"""Every example names the posts it was made from, and an example whose posts are gone upstream is forgotten."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from void_pipeline.lib.curate.dataset import TurnStats, build_examples, split_by_thread, write_dataset
from void_pipeline.lib.curate.metadata import deleted_markdown
from void_pipeline.lib.curate.prompt import PromptTemplate
from void_pipeline.lib.curate.request import direct_profile
from void_pipeline.lib.ingest.threads import THREAD_SCHEMA
from void_pipeline.lib.layout import DatasetPaths
from void_pipeline_tests.support.curate import kept_posts

AGENT = "did:plc:void"
START = datetime(2025, 6, 1, tzinfo=UTC)
ROOT = "at://did:plc:ada/app.bsky.feed.post/r0"  # ada's post, quoting cat's
QUOTED = "at://did:plc:cat/app.bsky.feed.post/q0"
REPLY = "at://did:plc:bob/app.bsky.feed.post/p0"  # bob answers ada; void answers bob in two posts
V1, V2 = f"at://{AGENT}/app.bsky.feed.post/v1", f"at://{AGENT}/app.bsky.feed.post/v2"
OTHER_ROOT = "at://did:plc:ada/app.bsky.feed.post/s0"  # another thread: ada asks, void answers once
W1 = f"at://{AGENT}/app.bsky.feed.post/w1"


def ancestor(uri: str, text: str, reason: str | None = None, embed: dict[str, Any] | None = None) -> dict[str, Any]:
    did = uri.split("/")[2]
    return {
        "uri": uri,
        "cid": "c",
        "author_did": did,
        "author_handle": did.split(":")[-1] + ".test",
        "text": None if reason else text,
        "created_at": "2025-06-01T00:00:00.000Z",
        "available": reason is None,
        "reason": reason,
        "source": "appview",
        "embed_json": json.dumps(embed) if embed else None,
    }


QUOTE_VIEW = {  # the AppView's view of ada's quote of cat's post, as getPosts sent it
    "$type": "app.bsky.embed.record#view",
    "record": {
        "$type": "app.bsky.embed.record#viewRecord",
        "uri": QUOTED,
        "cid": "c",
        "author": {"did": "did:plc:cat", "handle": "cat.test"},
        "value": {"$type": "app.bsky.feed.post", "text": "cat's quoted words", "createdAt": "2025-05-31T00:00:00Z"},
        "indexedAt": "2025-05-31T00:00:00Z",
    },
}


def frames(reply_reason: str | None = None, without: tuple[str, ...] = ()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The agent's posts (less ``without``) and thread context, bob's post unavailable for ``reply_reason``."""
    posts = [
        (V1, "The first part of void's answer to bob.", REPLY, ROOT, 1),
        (V2, "The second part of void's answer to bob.", V1, ROOT, 2),
        (W1, "A single answer to ada's other question.", OTHER_ROOT, OTHER_ROOT, 3),
    ]
    post_frame = kept_posts([row for row in posts if row[0] not in without], START)
    thread = [ancestor(ROOT, "ada starts a thread", embed=QUOTE_VIEW), ancestor(REPLY, "bob replies", reply_reason)]
    context = pl.DataFrame(
        [
            {"uri": V1, "parent_uri": REPLY, "root_uri": ROOT, "depth": 2, "complete": True, "ancestors": thread},
            {
                "uri": W1,
                "parent_uri": OTHER_ROOT,
                "root_uri": OTHER_ROOT,
                "depth": 1,
                "complete": True,
                "ancestors": [ancestor(OTHER_ROOT, "ada asks again")],
            },
        ],
        schema=THREAD_SCHEMA,
    )
    return post_frame, context


def built(gone: dict[str, str] | None = None, **frame_options: Any) -> tuple[dict[str, dict[str, Any]], TurnStats]:
    posts, context = frames(**frame_options)
    examples, stats = build_examples(posts, context, PromptTemplate.from_file(), AGENT, "void.test", gone=gone)
    return {e["example_id"]: e for e in examples.to_dicts()}, stats


def test_each_example_names_the_thread_it_shows_the_quote_and_its_own_posts(tmp_path: Path) -> None:
    examples, stats = built()
    # by hand: the thread root first, then bob's post; the post ada quotes (the prompt shows its text); void's two posts
    assert examples[V1]["source_uris"] == [ROOT, REPLY, QUOTED, V1, V2]
    assert "cat's quoted words" in examples[V1]["prompt"]
    assert examples[W1]["source_uris"] == [OTHER_ROOT, W1]
    assert stats.skipped["deleted_upstream"] == 0

    posts, context = frames()
    rows, _ = build_examples(posts, context, PromptTemplate.from_file(), AGENT, "void.test")
    kept = split_by_thread(rows, test_threads=0).with_columns(tokens=pl.lit(10))
    write_dataset(tmp_path / "set", kept, "openai", direct_profile("You are void."), {})
    index = pl.read_parquet(DatasetPaths(tmp_path / "set").index)
    assert dict(zip(index["example_id"], index["source_uris"].to_list(), strict=True)) == {
        V1: [ROOT, REPLY, QUOTED, V1, V2],
        W1: [OTHER_ROOT, W1],
    }


@pytest.mark.parametrize(
    ("gone", "hit"),
    [
        ({REPLY: "deleted"}, REPLY),  # the post answered
        ({ROOT: "deactivated"}, ROOT),  # a post higher in the thread
        ({QUOTED: "taken_down"}, QUOTED),  # a post the thread quotes
        ({V2: "deleted"}, V2),  # one of the agent's own posts of the turn
    ],
)
def test_an_example_showing_a_post_in_the_ledger_is_dropped_and_counted(gone: dict[str, str], hit: str) -> None:
    examples, stats = built(gone)
    assert set(examples) == {W1}, "only the other thread's example is left"
    assert stats.skipped["deleted_upstream"] == 1 and stats.turns == 1
    assert stats.deleted == [(V1, hit, gone[hit])]
    assert hit in deleted_markdown(stats)


def test_thread_context_s_own_deletion_marks_drop_the_example_without_the_ledger() -> None:
    examples, stats = built(reply_reason="taken_down")
    assert set(examples) == {W1} and stats.deleted == [(V1, REPLY, "taken_down")]
    assert stats.skipped["parent_unavailable"] == 0

    examples, stats = built(reply_reason="not_found")  # unavailable, but not one of the ledger's reasons
    assert set(examples) == {W1} and stats.skipped["parent_unavailable"] == 1
    assert stats.skipped["deleted_upstream"] == 0 and "_none" in deleted_markdown(stats)


def test_a_turn_whose_first_post_left_the_export_is_counted_as_deleted() -> None:
    examples, stats = built({V1: "deleted"}, without=(V1,))
    assert set(examples) == {W1}
    assert stats.deleted == [(V2, V1, "deleted")] and stats.skipped["chain_head_filtered"] == 0
