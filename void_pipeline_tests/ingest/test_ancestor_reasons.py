"""Ancestors that cannot be had keep the reason why, and the getRecord fallback is really used: on the shared
devnet, with an account of the test's own (deactivated) so the other tests' data stays as seeded."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from void_pipeline.lib.ingest.identity import IdentityResolver
from void_pipeline.lib.ingest.resilience import ResilientHttp
from void_pipeline.lib.ingest.threads import AncestorFetcher, PostCache
from void_pipeline.lib.ingest.xrpc import XrpcClient
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.seeding import SeedResult
from void_pipeline_tests.support.world import Agent

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


def new_account(client: XrpcClient, handle: str) -> dict[str, Any]:
    """An account of the test's own on the PDS ``client`` talks to: its session (did, accessJwt)."""
    session: dict[str, Any] = client.procedure(
        "com.atproto.server.createAccount",
        {"handle": handle, "email": f"{handle}@devnet.test", "password": secrets.token_hex(12)},
    )
    return session


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
        session = new_account(client, f"gone{secrets.token_hex(3)}{pds.handle_domain}")
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


def test_thread_context_keeps_display_names_and_the_record_the_handler_shows(
    devnet: DevnetInfo, tmp_path: Path
) -> None:
    """getPosts' author.displayName and the record itself (facets) are kept for the handler-profile prompt; the
    agent's own name comes from its profile record."""
    from void_pipeline.lib.ingest.agent import profile_display_name

    assert devnet.appview_url
    pds = devnet.pds[0]
    with ResilientHttp() as http:
        client = XrpcClient(pds.url, client=http)
        session = new_account(client, f"named{secrets.token_hex(3)}{pds.handle_domain}")
        token, did = session["accessJwt"], session["did"]
        profile = {"$type": "app.bsky.actor.profile", "displayName": "Ada Lovelace"}
        client.procedure(
            "com.atproto.repo.putRecord",
            {"repo": did, "collection": "app.bsky.actor.profile", "rkey": "self", "record": profile},
            token=token,
        )
        facet = {
            "index": {"byteStart": 0, "byteEnd": 4},
            "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "t"}],
        }
        record = {
            "$type": "app.bsky.feed.post",
            "text": "#tag me",
            "createdAt": "2026-11-30T00:00:00Z",
            "facets": [facet],
        }
        uri = client.procedure(
            "com.atproto.repo.createRecord",
            {"repo": did, "collection": "app.bsky.feed.post", "record": record},
            token=token,
        )["uri"]
        resolver = IdentityResolver(http, devnet.plc_url)
        fetcher = AncestorFetcher(http, devnet.appview_url, resolver, PostCache(tmp_path / "cache.jsonl"))
        fetcher.ensure([uri])
        assert profile_display_name(http, resolver, did) == "Ada Lovelace"
    post = fetcher.cache.get(uri)
    assert post is not None and post.source == "appview" and post.author_display_name == "Ada Lovelace"
    assert post.record_json is not None and json.loads(post.record_json)["facets"] == [facet]
    reread = PostCache(tmp_path / "cache.jsonl").get(uri)  # the cache keeps both across runs
    assert (
        reread is not None and reread.author_display_name == "Ada Lovelace" and reread.record_json == post.record_json
    )
