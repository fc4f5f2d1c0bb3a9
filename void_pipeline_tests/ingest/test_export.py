"""The export against the real devnet: complete, both paths, as Dagster assets with metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from atproto import models

from void_pipeline.lib.ingest.agent import ingest_agent
from void_pipeline.lib.ingest.export import ExportOptions, Method, export_collection
from void_pipeline.lib.ingest.resilience import ResilientHttp
from void_pipeline.lib.ingest.xrpc import XrpcClient
from void_pipeline.lib.layout import DataLayout
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.testworld.corpus import COLLECTIONS, POST
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.seeding import SeedResult
from void_pipeline_tests.support.expected import all_expected
from void_pipeline_tests.support.ingest import materialize_ingest
from void_pipeline_tests.support.world import Agent, agent_ingest

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


@pytest.mark.parametrize("method", ["car", "list_records"])
def test_exported_equals_seeded_for_every_collection(
    method: Method, agent: Agent, seeded: SeedResult, tmp_path: Path
) -> None:
    paths = agent_ingest(tmp_path)
    expected = all_expected(seeded, agent.did)
    with ResilientHttp() as http:
        pds = XrpcClient(agent.pds_url, client=http)
        for collection in COLLECTIONS:
            result = export_collection(pds, agent.did, collection, paths, ExportOptions(method=method), log=print)
            frame = pl.read_parquet(paths.records(collection))
            assert result.method == method and result.fallback_reason is None
            assert dict(zip(frame["uri"], frame["cid"], strict=True)) == expected[collection]
            assert result.quarantined == 0 and result.fetched == len(expected[collection])
        requests = http.stats.requests
    total = sum(len(v) for v in expected.values())
    if method == "car":
        assert requests <= 2 * len(COLLECTIONS)  # getLatestCommit each, one getRepo shared by all four
    else:  # a getLatestCommit and one listRecords page per 100 records (+ the empty page that ends a listing)
        pages = sum(-(-len(v) // 100) for v in expected.values())
        assert total / 100 <= requests <= pages + 2 * len(COLLECTIONS)


def test_rows_carry_normalised_text_and_reply_refs(agent: Agent, seeded: SeedResult, tmp_path: Path) -> None:
    paths = agent_ingest(tmp_path)
    with ResilientHttp() as http:
        for collection in COLLECTIONS:
            export_collection(XrpcClient(agent.pds_url, client=http), agent.did, collection, paths, log=print)
    manifest = seeded.manifest.filter(pl.col("did") == agent.did)
    by_uri = {r["uri"]: r for r in manifest.iter_rows(named=True)}
    keys = {r["key"]: r["uri"] for r in seeded.manifest.iter_rows(named=True)}
    for collection in COLLECTIONS:
        frame = pl.read_parquet(paths.records(collection))
        for row in frame.iter_rows(named=True):
            truth = by_uri[row["uri"]]
            assert row["text"] == truth["text"], collection
            assert row["created_at"].isoformat().startswith(truth["created_at"][:19])
            if collection == POST and truth["parent"]:
                assert row["reply_parent_uri"] == keys[truth["parent"]]
                assert row["reply_root_uri"] == keys[truth["thread"]]
    tools = pl.read_parquet(paths.records("stream.thought.tool.call"))
    assert tools["tool_args"].null_count() == 0 and tools["tool_args"].str.starts_with("{").all()


def test_appview_answers_validate_against_the_sdk_lexicon_models(devnet: DevnetInfo, seeded: SeedResult) -> None:
    assert devnet.appview_url
    deep = seeded.manifest.filter(pl.col("is_agent") & (pl.col("depth") >= 3) & ~pl.col("deleted")).head(25)
    answer = httpx.get(
        f"{devnet.appview_url}/xrpc/app.bsky.feed.getPosts", params=[("uris", u) for u in deep["uri"]]
    ).json()
    parsed = models.AppBskyFeedGetPosts.Response.model_validate(answer)
    assert {p.uri for p in parsed.posts} == set(deep["uri"])
    assert all(
        p.cid == c for p, c in zip(sorted(parsed.posts, key=lambda p: p.uri), deep.sort("uri")["cid"], strict=True)
    )
    thread = httpx.get(
        f"{devnet.appview_url}/xrpc/app.bsky.feed.getPostThread", params={"uri": deep["uri"][0], "parentHeight": 20}
    ).json()
    parsed_thread = models.AppBskyFeedGetPostThread.Response.model_validate(thread)
    assert parsed_thread.thread.post.uri == deep["uri"][0]
    too_many = httpx.get(
        f"{devnet.appview_url}/xrpc/app.bsky.feed.getPosts", params=[("uris", u) for u in seeded.manifest["uri"][:26]]
    )
    assert too_many.status_code == 400


def test_assets_materialize_with_metadata_people_can_read(
    devnet_endpoint: AtprotoEndpoint, agent: Agent, seeded: SeedResult, tmp_path: Path
) -> None:
    storage = PipelineStorage(root=str(tmp_path))
    metadata = materialize_ingest(devnet_endpoint, storage)
    expected = all_expected(seeded, agent.did)
    for collection in COLLECTIONS:
        meta = metadata[collection]
        assert meta["dagster/row_count"].value == len(expected[collection])
        assert meta["rows_new"].value == len(expected[collection])
        assert meta["method"].value == "car"
        preview = meta["preview"].value  # a table the UI renders: the newest records first
        assert [c.name for c in preview.schema.columns] == ["created_at", "text", "reply_parent_uri", "uri"]
        assert 0 < len(preview.records) <= 10 and preview.records[0].data["uri"] in expected[collection]
        columns = {c.name: c for c in meta["dagster/column_schema"].schema.columns}
        assert set(columns) >= {"uri", "cid", "text", "raw_json"}
        assert columns["created_at"].type == "datetime (UTC)" and columns["langs"].type == "list<string>"
        assert all(c.description for c in columns.values()), "every column says what it holds"
    context = metadata["thread_context"]
    replies = sum(1 for r in seeded.manifest.iter_rows(named=True) if r["is_agent"] and r["parent"])
    assert context["dagster/row_count"].value == replies
    columns = {c.name: c for c in context["dagster/column_schema"].schema.columns}
    assert columns["ancestors"].type.startswith("list<struct{uri, cid, author_did")
    assert all(c.description for c in columns.values())
    assert context["complete_chains"].value < replies  # deleted parents break some chains
    assert "deleted" in context["unavailable_ancestors"].value
    assert metadata["checks"] == {"thread_context_covers_every_reply": True}

    # Again: nothing new upstream, so no CAR download and no ancestor fetched twice.
    again = materialize_ingest(devnet_endpoint, storage)
    assert again[POST]["rows_new"].value == 0 and again[POST]["car_downloaded_this_run"].value is False
    assert again["thread_context"]["get_posts_calls"].value == 0
    assert again["thread_context"]["get_record_calls"].value == 0


def test_ancestor_chains_are_complete_to_the_root_across_pdses(
    agent: Agent, seeded: SeedResult, devnet: DevnetInfo, tmp_path: Path
) -> None:
    assert devnet.appview_url
    with ResilientHttp() as http:
        layout = DataLayout(tmp_path).agent("void")
        summary = ingest_agent(http, agent.did, devnet.plc_url, devnet.appview_url, layout, [POST], log=print)
    context = pl.read_parquet(agent_ingest(tmp_path).thread_context)
    by_uri = {r["uri"]: r for r in context.iter_rows(named=True)}
    rows = {r["key"]: r for r in seeded.manifest.iter_rows(named=True)}

    def truth_chain(row: dict[str, Any]) -> list[dict[str, Any]] | None:
        chain = []
        while row["parent"] is not None:
            row = rows[row["parent"]]
            if row["deleted"]:
                return None
            chain.append(row)
        return list(reversed(chain))

    checked = 0
    for row in rows.values():
        if not (row["is_agent"] and row["depth"] >= 8):
            continue
        expected = truth_chain(row)
        if expected is None:
            continue
        got = by_uri[row["uri"]]
        assert got["complete"] and got["depth"] == row["depth"] == len(expected)
        assert [a["uri"] for a in got["ancestors"]] == [r["uri"] for r in expected]
        assert [a["text"] for a in got["ancestors"]] == [r["text"] for r in expected]
        assert [a["author_handle"] for a in got["ancestors"]] == [r["author"] for r in expected]
        checked += 1
    assert checked >= 5
    other_pds = {a.did for a in seeded.accounts.values() if a.pds_url != agent.pds_url}
    ancestors = context.select("ancestors").explode("ancestors").unnest("ancestors")
    cross = ancestors.filter(pl.col("author_did").is_in(list(other_pds)) & pl.col("available"))
    assert cross.height > 0 and cross["author_handle"].str.ends_with(".bsky.test").all()
    assert summary.thread_stats is not None and summary.thread_stats.get_posts_calls > 0
