"""Turns become tool-call examples; the split never puts one thread in two places."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from void_pipeline.lib.curate.dataset import build_examples, format_row, leaked_roots, split_by_thread, write_dataset
from void_pipeline.lib.curate.letta import MemoryBlock
from void_pipeline.lib.curate.prompt import PromptTemplate
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL, REPLY_TOOL_NAME, reply_call_errors
from void_pipeline.lib.curate.request import RequestProfile, direct_profile
from void_pipeline.lib.ingest.threads import THREAD_SCHEMA
from void_pipeline.lib.train.training import dataset_hash
from void_pipeline_tests.support.curate import kept_posts
from void_pipeline_tests.support.trainer import dataset_sha256

AGENT = "did:plc:void"
START = datetime(2025, 6, 1, tzinfo=UTC)


def uri(did: str, rkey: str) -> str:
    return f"at://{did}/app.bsky.feed.post/{rkey}"


def ancestor(u: str, text: str, available: bool = True) -> dict[str, Any]:
    did = u.split("/")[2]
    return {
        "uri": u,
        "cid": "c",
        "author_did": did,
        "author_handle": did.split(":")[-1] + ".test",
        "text": text,
        "created_at": "2025-06-01T00:00:00.000Z",
        "available": available,
        "reason": None if available else "deleted",
        "source": "appview",
    }


def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Thread A: ada asks, void answers in three posts. Thread B: bob asks, void answers once; a deleted parent."""
    root_a, root_b, gone = uri("did:plc:ada", "a0"), uri("did:plc:bob", "b0"), uri("did:plc:cat", "c0")
    posts = [
        (uri(AGENT, "v1"), "First part of the answer, long enough.", root_a, root_a, 1),
        (uri(AGENT, "v2"), "Second part of the answer, continuing.", uri(AGENT, "v1"), root_a, 2),
        (uri(AGENT, "v3"), "Third part of the answer, concluding.", uri(AGENT, "v2"), root_a, 3),
        (uri(AGENT, "v4"), "A single reply to bob's question here.", root_b, root_b, 4),
        (uri(AGENT, "v5"), "A reply to a post that was deleted.", gone, gone, 5),
    ]
    post_frame = kept_posts(posts, START)
    context = pl.DataFrame(
        [
            {
                "uri": uri(AGENT, "v1"),
                "parent_uri": root_a,
                "root_uri": root_a,
                "depth": 1,
                "complete": True,
                "missing_reason": None,
                "ancestors": [ancestor(root_a, "ada asks a question")],
            },
            {
                "uri": uri(AGENT, "v4"),
                "parent_uri": root_b,
                "root_uri": root_b,
                "depth": 1,
                "complete": True,
                "missing_reason": None,
                "ancestors": [ancestor(root_b, "bob asks a question")],
            },
            {
                "uri": uri(AGENT, "v5"),
                "parent_uri": gone,
                "root_uri": gone,
                "depth": 1,
                "complete": False,
                "missing_reason": "deleted",
                "ancestors": [ancestor(gone, "", available=False)],
            },
        ],
        schema=THREAD_SCHEMA,
    )
    return post_frame, context


def test_consecutive_agent_posts_become_one_turn_of_calls_in_order() -> None:
    posts, context = frames()
    examples, stats = build_examples(posts, context, PromptTemplate.from_file(), AGENT, "void.test")
    by_first = {e["first_uri"]: e for e in examples.to_dicts()}
    assert by_first[uri(AGENT, "v1")]["calls"] == [
        "First part of the answer, long enough.",
        "Second part of the answer, continuing.",
        "Third part of the answer, concluding.",
    ]
    assert by_first[uri(AGENT, "v4")]["calls"] == ["A single reply to bob's question here."]
    # a parent thread context saw deleted is one of the ledger's reasons: the example is forgotten, not just unanswerable
    assert stats.turns == 2 and stats.posts_in_turns == 4 and stats.skipped["deleted_upstream"] == 1
    assert "ada asks a question" in by_first[uri(AGENT, "v1")]["prompt"]


def test_rows_carry_valid_tool_calls_in_every_format() -> None:
    posts, context = frames()
    examples, _ = build_examples(posts, context, PromptTemplate.from_file(), AGENT, "void.test")
    example = examples.filter(pl.col("first_uri") == uri(AGENT, "v1")).to_dicts()[0]
    openai = format_row(example, "openai")
    # The system prompt is stored once; the answer is the agent loop's turns: a call, the tool's result, ... , an end.
    roles = [m["role"] for m in openai["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool", "assistant"]
    calls = [c for m in openai["messages"] if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    assert all(len(m.get("tool_calls", [])) <= 1 for m in openai["messages"])
    assert [c["function"]["arguments"]["text"][:6] for c in calls] == ["First ", "Second", "Third "]
    assert [c["function"]["name"] for c in calls] == [REPLY_TOOL_NAME] * 3
    ids = [c["id"] for c in calls]
    assert len(set(ids)) == 3 and all(len(i) == 9 and i.isalnum() for i in ids)
    assert [m["tool_call_id"] for m in openai["messages"] if m["role"] == "tool"] == ids
    assert openai["messages"][-1] == {"role": "assistant", "content": ""}
    assert all(reply_call_errors(c["function"]["arguments"]) == [] for c in calls)
    assert openai["tools"][0]["function"]["name"] == REPLY_TOOL_NAME
    assert format_row(example, "openai", system="SYS")["messages"][0] == {"role": "system", "content": "SYS"}
    assert format_row(example, "sharegpt")["conversations"][0]["from"] == "human"
    assert '"text": "Third part' in format_row(example, "alpaca")["output"]


def many_threads(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"example_id": f"e{i}-{j}", "root_uri": f"root{i}", "created_at": START + timedelta(hours=i, minutes=j)}
            for i in range(n)
            for j in range(3)
        ]
    )


def test_split_is_by_thread_and_newest_threads_are_the_test_set() -> None:
    split = split_by_thread(many_threads(200), test_threads=20, val_share=0.05)
    assert leaked_roots(split) == []
    test_roots = set(split.filter(pl.col("split") == "test")["root_uri"])
    assert test_roots == {f"root{i}" for i in range(180, 200)}
    assert split.filter(pl.col("split") == "val")["root_uri"].n_unique() == 9
    newest_train = split.filter(pl.col("split") == "train")["created_at"].max()
    assert newest_train < split.filter(pl.col("split") == "val")["created_at"].min()  # type: ignore[operator]


def test_an_injected_leak_is_found() -> None:
    split = split_by_thread(many_threads(50), test_threads=5)
    leaked_row = split.filter(pl.col("split") == "train").head(1).with_columns(pl.lit("test").alias("split"))
    assert leaked_roots(pl.concat([split, leaked_row])) == [leaked_row["root_uri"][0]]


def test_the_test_set_is_capped_to_a_share_of_a_small_corpus() -> None:
    split = split_by_thread(many_threads(100), test_threads=500, test_share_max=0.2)
    assert split.filter(pl.col("split") == "test")["root_uri"].n_unique() == 20
    assert split.filter(pl.col("split") == "train")["root_uri"].n_unique() > 70


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_tiny_corpora_still_split_without_leaks(threads: int) -> None:
    split = split_by_thread(many_threads(threads), test_threads=500)
    assert leaked_roots(split) == [] and split["split"].null_count() == 0
    assert "train" in set(split["split"])


def test_reasoning_written_just_before_a_turn_is_attached_when_asked() -> None:
    posts, context = frames()
    first_reply = START + timedelta(minutes=1)
    reasoning = pl.DataFrame(
        {
            "created_at": [first_reply - timedelta(seconds=30), START - timedelta(hours=5)],
            "text_norm": ["ada wants specifics; answer in three posts", "an old thought about nothing"],
        }
    )
    examples, _ = build_examples(posts, context, PromptTemplate.from_file(), AGENT, "void.test", reasoning)
    by_first = {e["first_uri"]: e for e in examples.to_dicts()}
    assert by_first[uri(AGENT, "v1")]["reasoning"] == "ada wants specifics; answer in three posts"
    assert by_first[uri(AGENT, "v4")]["reasoning"] is None  # nothing within the window before bob's reply
    row = format_row(by_first[uri(AGENT, "v1")], "openai")
    assert row["messages"][1]["content"] == "ada wants specifics; answer in three posts"
    without, _ = build_examples(posts, context, PromptTemplate.from_file(), AGENT, "void.test")
    assert without["reasoning"].null_count() == without.height


@pytest.mark.parametrize("runtime", ["direct", "letta"])
def test_a_rebuild_of_the_same_rows_keeps_the_dataset_hash_and_a_changed_row_changes_it(
    runtime: str, tmp_path: Path
) -> None:
    """What training and the data version hash: the same rows written again are the same bytes (a letta profile's
    system message holds the newest example's time, not the time of the build); one changed answer is a new hash."""
    posts, context = frames()
    examples, _ = build_examples(posts, context, PromptTemplate.from_file(), AGENT, "void.test")
    kept = split_by_thread(examples, test_threads=0).with_columns(tokens=pl.lit(10))
    profile = direct_profile("You are void.") if runtime == "direct" else letta_profile()

    def written(name: str, rows: pl.DataFrame) -> str:
        write_dataset(tmp_path / name, rows, "openai", profile, {"name": name})
        return dataset_hash(tmp_path / name)

    first = written("first", kept)
    assert first == dataset_sha256(tmp_path / "first") and len(first) == 64
    assert written("again", kept) == first  # a different manifest, same rows: what training reads is unchanged
    if runtime == "letta":  # the newest example's time (bob's question, 4 minutes in), not the clock's
        assert "recompiled: 2025-06-01 12:04:00 AM UTC+0000" in (tmp_path / "first" / "system_prompt.txt").read_text()
    changed = kept.with_columns(
        calls=pl.when(pl.col("first_uri") == uri(AGENT, "v4"))
        .then(pl.lit(["Another answer to bob."]))
        .otherwise("calls")
    )
    assert changed["calls"].to_list() != kept["calls"].to_list()
    assert written("changed", changed) != first


def letta_profile() -> RequestProfile:
    block = MemoryBlock("persona", "I am void.", 200, "Who I am.", False)
    return RequestProfile("letta", "Be brief.", (REPLY_TOOL,), (block,), agent_type="letta_v1_agent", timezone="UTC")
