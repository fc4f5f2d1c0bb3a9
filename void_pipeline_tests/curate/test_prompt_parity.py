"""Training prompt = serving prompt: for threads the agent answered, the prompt in the training data (rendered from
thread context) is byte for byte what `python -m void_pipeline prompt --uri` renders from the AppView's
getPostThread at serving time — the request the handler would send for that mention."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline_tests.support.cli import pipeline_cli


def prompt_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return pipeline_cli("prompt", *args)


@pytest.mark.integration
def test_the_training_prompt_is_what_the_handler_would_send(curated: dict[str, Any], devnet: DevnetInfo) -> None:
    assert devnet.appview_url
    dataset: Path = curated["dataset"]
    rows = [json.loads(line) for line in (dataset / "train.jsonl").read_text().splitlines()]
    index = pl.read_parquet(dataset / "index.parquet").filter(pl.col("split") == "train").sort("created_at")
    records = pl.read_parquet(
        next(Path(curated["storage"].root).glob("agents/*/ingest/raw_records/app.bsky.feed.post.parquet"))
    )
    parents = dict(zip(records["uri"], records["reply_parent_uri"], strict=True))
    assert index["created_at"].n_unique() == len(rows)  # train.jsonl is in created_at order: row i is index row i
    users = [next(m["content"] for m in row["messages"] if m["role"] == "user") for row in rows]
    checked = 0
    for i in range(0, len(rows), max(1, len(rows) // 6)):
        served = prompt_cli("--uri", parents[index["example_id"][i]], "--appview-url", devnet.appview_url)
        assert served.returncode == 0, served.stderr
        assert served.stdout.removesuffix("\n") == users[i]
        checked += 1
    # the seeded accounts have display names: the header's author_name and the YAML's display_name show them
    headers = [re.match(r"A Bluesky post from @(\S+) \((.*)\) mentions you\.", user) for user in users]
    assert all(headers) and any(h[1] != h[2] for h in headers if h)
    assert any("    display_name: " in user for user in users)
    assert checked >= 5


@pytest.mark.integration
def test_the_prompt_preview_reads_a_thread_file_and_refuses_bad_input(tmp_path: Path) -> None:
    thread = {
        "thread": {
            "$type": "app.bsky.feed.defs#threadViewPost",
            "post": {
                "uri": "at://did:plc:aaa/app.bsky.feed.post/3k1",
                "cid": "bafy",
                "author": {"did": "did:plc:aaa", "handle": "ada.test", "displayName": "Ada"},
                "record": {"$type": "app.bsky.feed.post", "text": "what now?", "createdAt": "2026-01-01T00:00:00Z"},
                "indexedAt": "2026-01-01T00:00:00Z",
            },
            "parent": {
                "$type": "app.bsky.feed.defs#blockedPost",
                "uri": "at://did:plc:b/app.bsky.feed.post/0",
                "blocked": True,
                "author": {"did": "did:plc:b"},
            },
        }
    }
    (tmp_path / "thread.json").write_text(json.dumps(thread))
    shown = prompt_cli("--thread", str(tmp_path / "thread.json"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(
        'A Bluesky post from @ada.test (Ada) mentions you.\n\nTHE POST TO ANSWER:\n"what now?"'
    )
    assert "posts:\n- author:\n    did: did:plc:aaa\n    display_name: Ada\n    handle: ada.test\n" in shown.stdout
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "t.txt").write_text("{mention_text} {thread_context} {oops}")
    for args, message in [
        (["--thread", str(tmp_path / "bad.json")], "is not JSON"),
        (["--thread", str(tmp_path / "missing.json")], "does not exist"),
        (
            ["--thread", str(tmp_path / "thread.json"), "--template", str(tmp_path / "t.txt")],
            "unknown placeholder oops",
        ),
        (["--thread", str(tmp_path / "t.txt")], "is not JSON"),
        ([], "give exactly one of --thread FILE and --uri AT_URI"),
    ]:
        refused = prompt_cli(*args)
        assert (
            refused.returncode != 0 and message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        ), (
            args,
            refused.stderr,
        )
