"""Ingest helpers: the ingest assets materialized against a devnet, a listing's progress on disk, records read and
written through a PDS as a client would."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from void_pipeline.defs.ingest.assets import raw_records, thread_context
from void_pipeline.defs.ingest.checks import raw_records_unique_uris, thread_context_covers_every_reply
from void_pipeline.lib.ingest.xrpc import XrpcClient
from void_pipeline.lib.layout import IngestPaths
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.testworld.corpus import COLLECTIONS, POST
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.seeding import SeedResult


def materialize_ingest(endpoint: AtprotoEndpoint, storage: PipelineStorage) -> dict[str, Any]:
    """raw_records for every partition, then thread_context; returns metadata by step."""
    resources = {"endpoint": endpoint, "storage": storage}
    metadata: dict[str, Any] = {}
    for collection in COLLECTIONS:
        result = dg.materialize([raw_records, raw_records_unique_uris], partition_key=collection, resources=resources)
        assert result.success
        metadata[collection] = result.asset_materializations_for_node("raw_records")[0].metadata
        assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
    result = dg.materialize(
        [raw_records, thread_context, raw_records_unique_uris, thread_context_covers_every_reply],
        selection=[thread_context.key],
        resources=resources,
    )
    assert result.success
    metadata["thread_context"] = result.asset_materializations_for_node("thread_context")[0].metadata
    checks = result.get_asset_check_evaluations()
    metadata["checks"] = {c.check_name: c.passed for c in checks}
    return metadata


def listing_progress(paths: IngestPaths) -> int:
    """Pages checkpointed by unfinished listings plus collections finished: grows with every page listed."""
    pages = 0
    for checkpoint in paths.root.glob("listing/*/checkpoint.json"):
        try:
            pages += int(json.loads(checkpoint.read_text())["pages"])
        except (OSError, ValueError, KeyError):
            continue
    return pages + 1000 * len(list(paths.root.glob("raw_records/*.state.json")))


def list_all(pds_url: str, did: str, collection: str) -> list[dict[str, Any]]:
    """listRecords at 100 per page until an empty page (the last page can still carry a cursor)."""
    records: list[dict[str, Any]] = []
    cursor = None
    with XrpcClient(pds_url) as client:
        while True:
            page = client.query(
                "com.atproto.repo.listRecords", repo=did, collection=collection, limit=100, cursor=cursor
            )
            records.extend(page["records"])
            cursor = page.get("cursor")
            if not page["records"] or cursor is None:
                return records


def write(
    info: DevnetInfo, seeded: SeedResult, handle: str, writes: list[dict[str, Any]], validate: bool = True
) -> None:
    """applyWrites to ``handle``'s repo, as its owner."""
    account = seeded.accounts[handle]
    XrpcClient(account.pds_url).procedure(
        "com.atproto.repo.applyWrites",
        {"repo": account.did, "writes": writes, **({} if validate else {"validate": False})},
        token=account.access_jwt,
    )


def create(collection: str, value: dict[str, Any], rkey: str | None = None) -> dict[str, Any]:
    """One applyWrites create."""
    return {
        "$type": "com.atproto.repo.applyWrites#create",
        "collection": collection,
        "value": value,
        **({"rkey": rkey} if rkey else {}),
    }


def post(text: str, n: int) -> dict[str, Any]:
    return {"$type": POST, "text": text, "createdAt": f"2026-01-01T00:00:{n % 60:02d}.000Z"}
