"""Seeding the corpus into the real devnet, checked through the PDS and PLC APIs a client would use."""

from __future__ import annotations

from typing import Any

import httpx
import polars as pl
import pytest

from void_pipeline.lib.ingest.xrpc import XrpcClient, XrpcError
from void_pipeline.testworld.corpus import COLLECTIONS, POST, Corpus
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.seeding import ACCOUNTS_FILE, MANIFEST_FILE, SeedResult, record_cid
from void_pipeline_tests.support.ingest import list_all

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


def pds_of(plc_url: str, did: str) -> str:
    """DID → PDS through the PLC directory (service id #atproto_pds)."""
    doc = httpx.get(f"{plc_url}/{did}").json()
    return str(next(s["serviceEndpoint"] for s in doc["service"] if s["id"].endswith("#atproto_pds")))


def test_listed_records_match_the_manifest_per_collection(seeded: SeedResult, corpus: Corpus) -> None:
    expected = seeded.live_counts()
    assert {c for _, c in expected} == set(COLLECTIONS)
    for account in seeded.accounts.values():
        for collection in COLLECTIONS:
            listed = list_all(account.pds_url, account.did, collection)
            assert len(listed) == expected.get((account.did, collection), 0), (account.handle, collection)
            manifest = seeded.manifest.filter(
                (pl.col("did") == account.did) & (pl.col("collection") == collection) & ~pl.col("deleted")
            )
            assert {r["uri"]: r["cid"] for r in listed} == dict(zip(manifest["uri"], manifest["cid"], strict=True))


def test_manifest_and_accounts_are_written(seeded: SeedResult, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert seeded.records_written == seeded.manifest.height
    agent_rows = seeded.manifest.filter(pl.col("is_agent") & (pl.col("collection") == POST))
    assert agent_rows.height == 400
    assert seeded.manifest.filter(pl.col("loop")).height > 0
    assert set(seeded.manifest.columns) >= {"uri", "cid", "did", "loop", "deleted", "short", "duplicate_of"}


def test_manifest_files_round_trip(seeded: SeedResult, devnet: DevnetInfo, corpus: Corpus, tmp_path: Any) -> None:
    from void_pipeline.testworld.seeding import write_manifest

    write_manifest(seeded, tmp_path)
    assert pl.read_parquet(tmp_path / MANIFEST_FILE).equals(seeded.manifest)
    accounts = (tmp_path / ACCOUNTS_FILE).read_text()
    assert corpus.agent.handle in accounts
    assert devnet.account_password(corpus.agent.handle) not in accounts


def test_cross_pds_parent_resolves_through_the_plc_with_the_same_cid(seeded: SeedResult, devnet: DevnetInfo) -> None:
    agent = next(a for a in seeded.accounts.values() if a.handle.startswith("void."))
    other_pds = {a.did for a in seeded.accounts.values() if a.pds_url != agent.pds_url}
    replies = list_all(agent.pds_url, agent.did, POST)
    cross = [
        r for r in replies if "reply" in r["value"] and r["value"]["reply"]["parent"]["uri"].split("/")[2] in other_pds
    ]
    assert cross, "the corpus should hold replies to accounts on the other PDS"
    checked = 0
    for reply in cross[:20]:
        parent_ref = reply["value"]["reply"]["parent"]
        did, collection, rkey = parent_ref["uri"].removeprefix("at://").split("/")
        endpoint = pds_of(devnet.plc_url, did)
        assert endpoint != agent.pds_url
        try:
            parent = XrpcClient(endpoint).query(
                "com.atproto.repo.getRecord", repo=did, collection=collection, rkey=rkey
            )
        except XrpcError as err:  # a parent the corpus deleted
            assert err.error == "RecordNotFound"
            continue
        assert parent["cid"] == parent_ref["cid"]
        assert record_cid(parent["value"]) == parent["cid"]
        checked += 1
    assert checked > 5


def test_deleted_parents_are_gone_but_still_referenced(seeded: SeedResult, devnet: DevnetInfo) -> None:
    deleted = seeded.manifest.filter(pl.col("deleted"))
    assert deleted.height > 0
    orphans = seeded.manifest.filter(pl.col("parent").is_in(seeded.manifest.filter(pl.col("deleted"))["key"].to_list()))
    assert orphans.height > 0
    for row in deleted.head(5).iter_rows(named=True):
        with pytest.raises(XrpcError) as missing:
            XrpcClient(row["pds_url"]).query(
                "com.atproto.repo.getRecord", repo=row["did"], collection=row["collection"], rkey=row["rkey"]
            )
        assert missing.value.error == "RecordNotFound"


def test_deep_reply_chains_walk_back_to_their_root(seeded: SeedResult) -> None:
    rows = {r["key"]: r for r in seeded.manifest.iter_rows(named=True)}
    by_uri = {r["uri"]: r for r in rows.values()}

    def intact(row: dict[str, Any]) -> bool:  # no deleted post between it and its root
        while row["parent"] is not None:
            row = rows[row["parent"]]
            if row["deleted"]:
                return False
        return True

    deep = [r for r in rows.values() if r["is_agent"] and r["depth"] >= 8 and intact(r)]
    assert deep, "the corpus should hold agent replies at depth >= 8"
    row = max(deep, key=lambda r: r["depth"])
    root_uri = rows[row["thread"]]["uri"]
    uri, steps = row["uri"], 0
    while True:
        did, collection, rkey = uri.removeprefix("at://").split("/")
        record = XrpcClient(by_uri[uri]["pds_url"]).query(
            "com.atproto.repo.getRecord", repo=did, collection=collection, rkey=rkey
        )["value"]
        if "reply" not in record:
            break
        assert record["reply"]["root"]["uri"] == root_uri
        uri = record["reply"]["parent"]["uri"]
        steps += 1
    assert uri == root_uri
    assert steps == row["depth"] >= 8


def test_the_pds_rejects_floats(seeded: SeedResult) -> None:
    agent = next(a for a in seeded.accounts.values() if a.handle.startswith("void."))
    with pytest.raises(XrpcError) as rejected:
        XrpcClient(agent.pds_url).procedure(
            "com.atproto.repo.createRecord",
            {
                "repo": agent.did,
                "collection": "stream.thought.memory",
                "record": {
                    "$type": "stream.thought.memory",
                    "content": "x",
                    "score": 0.5,
                    "createdAt": "2025-01-01T00:00:00.000Z",
                },
            },
            token=agent.access_jwt,
        )
    assert rejected.value.status == 400
