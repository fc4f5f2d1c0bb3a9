"""The agent keeps talking: new replies by the demo's agent, posted on the devnet now, after its adapter was trained
and served; what the shadow run answers beside it."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from void_pipeline.lib.ingest.xrpc import XrpcClient
from void_pipeline.testworld.corpus import POST, agent_post_text
from void_pipeline.testworld.devnet import DevnetInfo, seed_dir


def post_new_replies(info: DevnetInfo, agent_handle: str, count: int = 3, seed: int = 0) -> list[str]:
    """``count`` replies by the agent, each to one of the other accounts' newest thread openers in the seeded
    corpus, created now; returns their URIs."""
    manifest = pl.read_parquet(seed_dir(Path(info.state_dir)) / "manifest.parquet")
    openers = (
        manifest.filter(
            (pl.col("collection") == POST) & ~pl.col("is_agent") & ~pl.col("deleted") & pl.col("parent").is_null()
        )
        .sort("created_at", descending=True)
        .head(count)
    )
    pds = info.pds_for_handle(agent_handle)
    rng = random.Random(seed)
    made = []
    with XrpcClient(pds.url) as client:
        session = client.procedure(
            "com.atproto.server.createSession",
            {"identifier": agent_handle, "password": info.account_password(agent_handle)},
        )
        for uri, cid in openers.select("uri", "cid").iter_rows():
            opener = {"uri": uri, "cid": cid}
            record = {
                "$type": POST,
                "text": agent_post_text(rng),
                "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "reply": {"root": opener, "parent": opener},
            }
            answer = client.procedure(
                "com.atproto.repo.createRecord",
                {"repo": session["did"], "collection": POST, "record": record},
                token=session["accessJwt"],
            )
            made.append(str(answer["uri"]))
    return made
