"""Ancestors that cannot be had keep the reason why, and the getRecord fallback is really used: on the shared
devnet, with an account of the test's own (deactivated) so the other tests' data stays as seeded."""

from __future__ import annotations

import secrets
from pathlib import Path

import polars as pl

from void_pipeline.lib.ingest.identity import IdentityResolver
from void_pipeline.lib.ingest.resilience import ResilientHttp
from void_pipeline.lib.ingest.threads import AncestorFetcher, PostCache
from void_pipeline.lib.ingest.xrpc import XrpcClient
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.seeding import SeedResult
from void_pipeline_tests.conftest import Agent


def test_every_reason_an_ancestor_is_missing_and_the_getrecord_fallback(
    devnet: DevnetInfo, seeded: SeedResult, agent: Agent, tmp_path: Path
) -> None:
    live = seeded.manifest.filter(
        (pl.col("collection") == "app.bsky.feed.post") & ~pl.col("deleted") & (pl.col("did") != agent.did)
    ).head(5)
    real = list(live["uri"])
    deleted = seeded.manifest.filter((pl.col("collection") == "app.bsky.feed.post") & pl.col("deleted"))["uri"][0]
    pds = devnet.pds[0]
    with ResilientHttp() as http:
        client = XrpcClient(pds.url, client=http)
        handle = f"gone{secrets.token_hex(3)}{pds.handle_domain}"
        session = client.procedure(
            "com.atproto.server.createAccount",
            {"handle": handle, "email": f"{handle}@devnet.test", "password": secrets.token_hex(12)},
        )
        token = session["accessJwt"]
        record = {"$type": "app.bsky.feed.post", "text": "soon gone", "createdAt": "2026-11-30T00:00:00Z"}
        made = client.procedure(
            "com.atproto.repo.createRecord",
            {"repo": session["did"], "collection": "app.bsky.feed.post", "record": record},
            token=token,
        )
        gone = made["uri"]
        client.procedure("com.atproto.server.deactivateAccount", {}, token=token)

        unknown_did = "at://did:plc:" + "a" * 24 + "/app.bsky.feed.post/3kabcdefghijk"
        never = real[0].rsplit("/", 1)[0] + "/3kzzzzzzzzzzz"
        # the PLC directory answers no getPosts: every lookup falls back to com.atproto.repo.getRecord
        fetcher = AncestorFetcher(
            http, devnet.plc_url, IdentityResolver(http, devnet.plc_url), PostCache(tmp_path / "cache.jsonl")
        )
        fetcher.ensure([*real, deleted, gone, unknown_did, never, "at://not-a-did/app.bsky.feed.post/x"])

    posts = {uri: fetcher.cache.get(uri) for uri in [*real, deleted, gone, unknown_did, never]}
    assert all(posts[u] is not None and posts[u].available and posts[u].source == "pds" for u in real)  # type: ignore[union-attr]
    assert [posts[u].text for u in real] == [seeded.manifest.filter(pl.col("uri") == u)["text"][0] for u in real]  # type: ignore[union-attr]
    reasons = {uri: post.reason for uri, post in posts.items() if post is not None and not post.available}
    assert reasons == {
        deleted: "deleted",
        gone: "deactivated",
        unknown_did: "identity_unresolvable",
        never: "deleted",  # a record key that never existed reads the same as a deleted one
    }
    assert fetcher.stats.get_posts_calls >= 1 and fetcher.stats.get_record_calls == len(real) + 5
