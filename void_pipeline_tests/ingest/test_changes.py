"""A devnet of its own that changes under the exporter: new records, deletions, malformed records, takedowns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from void_pipeline.lib.ingest.export import ExportOptions, Method, export_collection
from void_pipeline.lib.ingest.identity import IdentityResolver
from void_pipeline.lib.ingest.resilience import ResilientHttp
from void_pipeline.lib.ingest.threads import AncestorFetcher, PostCache, build_thread_context, own_posts_from_rows
from void_pipeline.lib.ingest.xrpc import XrpcClient
from void_pipeline.testworld.corpus import MEMORY, POST, CorpusSpec, generate, iso, tid
from void_pipeline.testworld.devnet import Devnet, DevnetInfo
from void_pipeline.testworld.seeding import SeedResult, seed_corpus
from void_pipeline_tests.support.ingest import create, list_all, post, write
from void_pipeline_tests.support.world import agent_ingest

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevnetInfo, SeedResult, str]]:
    corpus = generate(CorpusSpec(seed=21, agent_posts=150, other_accounts=6, deleted_parent_share=0.05))
    with Devnet(tmp_path_factory.mktemp("changing") / "state") as info:
        seeded = seed_corpus(info, corpus, progress=lambda m: None)
        yield info, seeded, corpus.agent.handle


def test_incremental_car_export_fetches_only_what_is_new(
    world: tuple[DevnetInfo, SeedResult, str], tmp_path: Path
) -> None:
    info, seeded, handle = world
    account = seeded.accounts[handle]
    paths = agent_ingest(tmp_path)
    with ResilientHttp() as http:
        pds = XrpcClient(account.pds_url, client=http)
        first = export_collection(pds, account.did, POST, paths)
        first_memory = export_collection(pds, account.did, MEMORY, paths)
        write(
            info,
            seeded,
            handle,
            [create(POST, post(f"new post number {i}", i)) for i in range(30)]
            + [create(MEMORY, {"$type": MEMORY, "content": f"memory {i}", "createdAt": iso_now()}) for i in range(10)],
        )
        second = export_collection(pds, account.did, POST, paths)
        second_memory = export_collection(pds, account.did, MEMORY, paths)
    assert first.car_downloaded and first.car_bytes > 0  # a fresh folder: the full repo CAR, once
    assert not first_memory.car_downloaded and first_memory.rev == first.rev  # the second collection shares it
    assert second.car_downloaded and not second.full
    assert list(paths.cars.glob(f"{second.rev}.since-{first.rev}.car"))
    assert second.car_bytes < first.car_bytes / 2  # a diff, not the repo again
    assert (second.new, second.total_rows) == (30, first.total_rows + 30)
    assert (second_memory.new, second_memory.total_rows) == (10, first_memory.total_rows + 10)
    assert second_memory.car_downloaded is False  # the same diff, shared by the second partition
    frame = pl.read_parquet(paths.records(POST))
    assert frame["uri"].n_unique() == frame.height


def iso_now() -> str:
    from datetime import UTC, datetime

    return iso(datetime.now(UTC))


def test_incremental_list_records_stops_at_known_records(
    world: tuple[DevnetInfo, SeedResult, str], tmp_path: Path
) -> None:
    info, seeded, handle = world
    account = seeded.accounts[handle]
    paths = agent_ingest(tmp_path)
    options = ExportOptions(method="list_records")
    with ResilientHttp() as http:
        pds = XrpcClient(account.pds_url, client=http)
        first = export_collection(pds, account.did, POST, paths, options)
        write(info, seeded, handle, [create(POST, post(f"later post {i}", i)) for i in range(5)])
        before = http.stats.requests
        second = export_collection(pds, account.did, POST, paths, options)
        requests = http.stats.requests - before
    assert (second.new, second.total_rows) == (5, first.total_rows + 5)
    assert requests <= 3  # getLatestCommit + the newest page (+ at most one more)


def test_full_refresh_reports_records_deleted_upstream(
    world: tuple[DevnetInfo, SeedResult, str], tmp_path: Path
) -> None:
    info, seeded, handle = world
    account = seeded.accounts[handle]
    paths = agent_ingest(tmp_path)
    with ResilientHttp() as http:
        pds = XrpcClient(account.pds_url, client=http)
        first = export_collection(pds, account.did, POST, paths)
        victims = pl.read_parquet(paths.records(POST))["rkey"].head(3).to_list()
        write(
            info,
            seeded,
            handle,
            [{"$type": "com.atproto.repo.applyWrites#delete", "collection": POST, "rkey": r} for r in victims],
        )
        refreshed = export_collection(pds, account.did, POST, paths, ExportOptions(full_refresh=True))
    assert refreshed.removed == 3 and refreshed.total_rows == first.total_rows - 3
    assert not set(victims) & set(pl.read_parquet(paths.records(POST))["rkey"])


MALFORMED: dict[str, dict[str, Any]] = {
    "missing_field": {"$type": POST, "createdAt": "2026-02-01T00:00:00.000Z"},
    "wrong_type": {"$type": POST, "text": 42, "createdAt": "2026-02-01T00:00:00.000Z"},
    "oversized_text": {"$type": POST, "text": "x" * 400, "createdAt": "2026-02-01T00:00:00.000Z"},
    "broken_reply_ref": {
        "$type": POST,
        "text": "hi",
        "createdAt": "2026-02-01T00:00:00.000Z",
        "reply": {"parent": {"uri": "not-a-uri"}},
    },
    "bad_created_at": {"$type": POST, "text": "hi", "createdAt": "yesterday"},
}  # (a missing or foreign $type cannot pass a PDS — it fills in or rejects it — so test_records covers those)


@pytest.mark.parametrize("method", ["car", "list_records"])
def test_malformed_records_are_quarantined_with_their_reason(
    method: Method, world: tuple[DevnetInfo, SeedResult, str], tmp_path: Path
) -> None:
    info, seeded, _ = world
    other = next(h for h in seeded.accounts if h.startswith("basil"))  # an account of its own for this test
    account = seeded.accounts[other]
    rkeys = {reason: tid(1_800_000_000_000_000 + i, 7) for i, reason in enumerate(MALFORMED)}
    existing = XrpcClient(account.pds_url).query(
        "com.atproto.repo.listRecords", repo=account.did, collection=POST, limit=100
    )["records"]
    if not any(r["uri"].endswith(rkeys["missing_field"]) for r in existing):
        write(
            info,
            seeded,
            other,
            [create(POST, value, rkeys[reason]) for reason, value in MALFORMED.items()],
            validate=False,
        )
    listed = len(list_all(account.pds_url, account.did, POST))
    paths = agent_ingest(tmp_path)
    with ResilientHttp() as http:
        result = export_collection(
            XrpcClient(account.pds_url, client=http), account.did, POST, paths, ExportOptions(method=method)
        )
    rejected = pl.read_parquet(paths.rejected(POST))
    by_rkey = {uri.rsplit("/", 1)[1]: reason for uri, reason in zip(rejected["uri"], rejected["reason"], strict=True)}
    assert by_rkey == {rkey: reason for reason, rkey in rkeys.items()}
    assert rejected["raw_json"].null_count() == 0 and rejected["detail"].str.len_chars().min() > 0  # type: ignore[operator]
    assert result.kept + result.quarantined == listed  # nothing silently dropped


def test_taken_down_and_deleted_ancestors_carry_their_reason(
    world: tuple[DevnetInfo, SeedResult, str], tmp_path: Path
) -> None:
    info, seeded, handle = world
    agent = seeded.accounts[handle]
    manifest = seeded.manifest
    parents = manifest.filter(pl.col("is_agent") & pl.col("parent").is_not_null()).select("parent")
    authors = manifest.join(parents, left_on="key", right_on="parent").filter(~pl.col("is_agent") & ~pl.col("deleted"))
    victim_did = authors["did"].mode()[0]
    victim = next(a for a in seeded.accounts.values() if a.did == victim_did)
    response = httpx.post(
        f"{victim.pds_url}/xrpc/com.atproto.admin.updateSubjectStatus",
        auth=("admin", info.admin_password),
        json={
            "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": victim_did},
            "takedown": {"applied": True, "ref": "test"},
        },
    )
    assert response.status_code == 200, response.text
    paths = agent_ingest(tmp_path)
    assert info.appview_url
    with ResilientHttp() as http:
        export_collection(XrpcClient(agent.pds_url, client=http), agent.did, POST, paths)
        posts = pl.read_parquet(paths.records(POST))
        fetcher = AncestorFetcher(
            http, info.appview_url, IdentityResolver(http, info.plc_url), PostCache(tmp_path / "c.jsonl")
        )
        context = build_thread_context(
            posts.filter(pl.col("reply_parent_uri").is_not_null()), own_posts_from_rows(posts, handle), fetcher
        )
    ancestors = context.select("ancestors").explode("ancestors").unnest("ancestors")
    victim_rows = ancestors.filter(pl.col("author_did") == victim_did)
    assert victim_rows.height > 0 and set(victim_rows["reason"]) == {"taken_down"}
    deleted_uris = set(manifest.filter(pl.col("deleted"))["uri"])
    reasons = dict(zip(ancestors["uri"], ancestors["reason"], strict=False))
    assert deleted_uris & set(reasons)
    assert all(reasons[u] in {"deleted", "taken_down"} for u in deleted_uris & set(reasons))
    assert fetcher.stats.unavailable["taken_down"] > 0 and fetcher.stats.unavailable["deleted"] > 0
