"""Deletions seen at ingest on the shared devnet, with a fresh agent: the agent's deleted reply leaves raw_records
(incremental export) into the ledger, and a deleted parent by another account is found by thread_context's re-check,
forgotten by the post cache and shown as deleted; a re-check stopped by a 429 resumes where it stopped."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from void_pipeline.defs.ingest.assets import raw_records, thread_context
from void_pipeline.lib.ingest.deletions import read_deletions
from void_pipeline.lib.ingest.identity import IdentityResolver
from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.ingest.resilience import ResilientHttp, RetryPolicy
from void_pipeline.lib.ingest.threads import AncestorFetcher, PostCache, recheck_ancestors
from void_pipeline.lib.layout import IngestPaths
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.fault_proxy import FaultPlan, FaultProxy
from void_pipeline_tests.support.fresh_agent import FreshWorld

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


def materialize(world: FreshWorld, storage: PipelineStorage, recheck: bool = False) -> dict[str, Any]:
    resources = {"endpoint": world.endpoint(), "storage": storage}
    exported = dg.materialize([raw_records], partition_key=POST, resources=resources)
    config = {"ops": {"thread_context": {"config": {"recheck": recheck}}}}
    threads = dg.materialize(
        [raw_records, thread_context], selection=[thread_context.key], resources=resources, run_config=config
    )
    assert exported.success and threads.success
    return {
        "raw_records": exported.asset_materializations_for_node("raw_records")[0].metadata,
        "thread_context": threads.asset_materializations_for_node("thread_context")[0].metadata,
    }


def test_a_deleted_reply_and_a_deleted_parent_leave_the_export_into_the_ledger(
    devnet: DevnetInfo, tmp_path: Path
) -> None:
    world = FreshWorld.create(devnet, "forget")
    secret = f"parent text {uuid.uuid4().hex} that its author deletes"
    root = world.post(world.other, "a question about entropy")
    parent = world.post(world.other, secret, reply_to=root)
    deleted_reply = world.post(world.agent, "a reply the agent deletes", reply_to=parent)
    kept_reply = world.post(world.agent, "a reply that stays", reply_to=parent)
    storage = PipelineStorage(root=str(tmp_path))
    paths = storage.agent_layout.ingest
    materialize(world, storage)
    assert secret in paths.post_cache.read_text()  # held before: the re-check must take it out

    world.delete(world.agent, deleted_reply)
    world.delete(world.other, parent)
    after = materialize(world, storage, recheck=True)

    exported, threads = after["raw_records"], after["thread_context"]
    table = pl.read_parquet(paths.records(POST))
    assert deleted_reply.uri not in table["uri"].to_list() and kept_reply.uri in table["uri"].to_list()
    assert exported["incremental"].value is True and exported["rows_removed_upstream"].value == 1
    ledger = {r["uri"]: r for r in read_deletions(paths).iter_rows(named=True)}
    assert set(ledger) == {deleted_reply.uri, parent.uri}
    assert (ledger[deleted_reply.uri]["own"], ledger[deleted_reply.uri]["source"]) == (True, "own_export")
    assert (ledger[parent.uri]["own"], ledger[parent.uri]["reason"]) == (False, "deleted")
    assert ledger[parent.uri]["source"] == "recheck"
    assert secret not in paths.post_cache.read_text()
    frame = pl.read_parquet(paths.thread_context)
    assert secret not in str(frame.to_dicts())
    row = frame.filter(pl.col("uri") == kept_reply.uri).to_dicts()[0]
    shown = {a["uri"]: a for a in row["ancestors"]}
    assert (shown[parent.uri]["available"], shown[parent.uri]["reason"]) == (False, "deleted")
    assert row["missing_reason"] == "deleted" and shown[root.uri]["available"] is True
    assert threads["recheck_ancestors_checked"].value == 2 and threads["recheck_finished"].value is True
    print(  # the numbers the report quotes
        f"recheck: {threads['recheck_requests_per_1000_ancestors'].value} requests per 1,000 ancestors "
        f"({threads['recheck_get_posts_calls'].value} getPosts, {threads['recheck_get_record_calls'].value} getRecord, "
        f"{threads['recheck_http_requests'].value} requests in all for 2); incremental export: car_bytes {exported['car_bytes'].value}, "
        f"http_requests {exported['http_requests'].value}"
    )


def test_a_recheck_stopped_by_rate_limits_resumes_where_it_stopped(devnet: DevnetInfo, tmp_path: Path) -> None:
    world = FreshWorld.create(devnet, "recheck")
    posts = [world.post(world.other, f"post {i} of three") for i in range(3)]
    paths = IngestPaths(tmp_path)
    assert devnet.appview_url
    with ResilientHttp(policy=RetryPolicy(max_rate_limited=0)) as http:
        resolver = IdentityResolver(http, devnet.plc_url, [devnet.appview_url])
        fetcher = AncestorFetcher(http, devnet.appview_url, resolver, PostCache(paths.post_cache), log=print)
        fetcher.ensure([p.uri for p in posts])
        # the second getPosts is answered 429, and the client gives up at once: one URI per batch here
        with FaultProxy(devnet.appview_url, FaultPlan(burst_every=2, burst_reset_s=60)) as proxy:
            limited = AncestorFetcher(http, proxy.url, resolver, PostCache(paths.post_cache), log=print)
            stopped = recheck_ancestors(limited, world.agent.did, paths, print, batch_size=1)
        assert (stopped.checked, stopped.finished, stopped.resumed) == (1, False, False)
        assert "429" in stopped.stopped_by or "rate" in stopped.stopped_by.lower()
        assert paths.recheck_checkpoint.exists()
        world.delete(world.other, posts[0])  # already re-checked in this cycle: seen by the next one
        world.delete(world.other, posts[2])
        resumed = recheck_ancestors(fetcher, world.agent.did, paths, print, batch_size=1)
    assert (resumed.resumed, resumed.finished, resumed.checked) == (True, True, 2)
    assert dict(resumed.gone) == {"deleted": 1}
    assert set(read_deletions(paths)["uri"]) == {posts[2].uri}
    assert not paths.recheck_checkpoint.exists()
