"""Seed a generated corpus into a running devnet: accounts, records via applyWrites, deletions, manifest.

Records are bound to real DIDs and their CIDs computed locally (DAG-CBOR, sha2-256), so reply and quote refs carry
real CIDs without waiting for the parent's write; every CID the PDS returns is checked against ours. Repos are
seeded in parallel (one sequential stream of ≤200-write commits per repo).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import libipld
import polars as pl

from void_pipeline.lib.files import write_bytes_atomic, write_text_atomic
from void_pipeline.lib.ingest.xrpc import XrpcClient, XrpcError
from void_pipeline.testworld.corpus import Corpus, bind_value
from void_pipeline.testworld.devnet import DevnetInfo

MAX_WRITES_PER_CALL = 200  # com.atproto.repo.applyWrites: at most 200 writes per call
MANIFEST_FILE = "manifest.parquet"
ACCOUNTS_FILE = "accounts.json"


class SeedError(RuntimeError):
    pass


def record_cid(value: dict[str, Any]) -> str:
    """The CID a PDS gives this record: CIDv1, dag-cbor codec, sha2-256 of the DAG-CBOR bytes, base32."""
    digest = hashlib.sha256(libipld.encode_dag_cbor(value)).digest()
    return str(libipld.encode_multibase("b", b"\x01\x71\x12\x20" + digest))


@dataclass(frozen=True)
class SeededAccount:
    handle: str
    did: str
    pds_url: str
    access_jwt: str = field(repr=False)


@dataclass
class SeedResult:
    accounts: dict[str, SeededAccount]
    manifest: pl.DataFrame
    records_written: int
    records_deleted: int
    seconds: float

    @property
    def records_per_second(self) -> float:
        return self.records_written / self.seconds if self.seconds else 0.0

    def live_counts(self) -> dict[tuple[str, str], int]:
        """(did, collection) → records that should be listed now (written minus deleted)."""
        live = self.manifest.filter(~pl.col("deleted")).group_by("did", "collection").len()
        return {(row["did"], row["collection"]): row["len"] for row in live.iter_rows(named=True)}


def create_accounts(info: DevnetInfo, corpus: Corpus, http: httpx.Client) -> dict[str, SeededAccount]:
    """Create each account on its PDS (or log in when it exists already, so seeding twice works), with a profile
    record naming its display name."""
    accounts = {}
    for account in corpus.accounts:
        pds = info.pds_for_handle(account.handle)
        client = XrpcClient(pds.url, client=http)
        password = info.account_password(account.handle)
        try:
            session = client.procedure(
                "com.atproto.server.createAccount",
                {"handle": account.handle, "email": f"{account.handle}@devnet.test", "password": password},
            )
        except XrpcError as err:
            if err.error != "HandleNotAvailable":
                raise
            session = client.procedure(
                "com.atproto.server.createSession", {"identifier": account.handle, "password": password}
            )
        if account.display_name:  # what an AppView shows as author.displayName (and the handler as author_name)
            profile = {"$type": "app.bsky.actor.profile", "displayName": account.display_name}
            client.procedure(
                "com.atproto.repo.putRecord",
                {"repo": session["did"], "collection": "app.bsky.actor.profile", "rkey": "self", "record": profile},
                token=session["accessJwt"],
            )
        accounts[account.handle] = SeededAccount(account.handle, session["did"], pds.url, session["accessJwt"])
    return accounts


def seed_corpus(
    info: DevnetInfo,
    corpus: Corpus,
    out_dir: Path | None = None,
    workers: int = 6,
    progress: Callable[[str], None] = print,
) -> SeedResult:
    """Seed ``corpus`` into the devnet; write ``manifest.parquet`` and ``accounts.json`` to ``out_dir``."""
    started = time.monotonic()
    limits = httpx.Limits(max_connections=workers * 2, max_keepalive_connections=workers * 2)
    with httpx.Client(timeout=120.0, limits=limits) as http:
        accounts = create_accounts(info, corpus, http)
        dids = {handle: a.did for handle, a in accounts.items()}
        progress(f"[seed] {len(accounts)} accounts on {len(info.pds)} PDSes")

        refs: dict[str, tuple[str, str]] = {}
        writes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        rows = corpus.manifest_rows()
        for record, row in zip(corpus.records, rows, strict=True):
            value = bind_value(record.value, dids, refs)
            did = dids[record.author]
            uri = f"at://{did}/{record.collection}/{record.rkey}"
            cid = record_cid(value)
            refs[record.key] = (uri, cid)
            row.update(did=did, uri=uri, cid=cid, pds_url=accounts[record.author].pds_url)
            writes[record.author].append(
                {
                    "$type": "com.atproto.repo.applyWrites#create",
                    "collection": record.collection,
                    "rkey": record.rkey,
                    "value": value,
                }
            )
        expected_cids = {row["uri"]: row["cid"] for row in rows}
        total = len(rows)
        done = [0]
        last_report = [time.monotonic()]

        def seed_repo(handle: str) -> int:
            account = accounts[handle]
            client = XrpcClient(account.pds_url, client=http)
            repo_writes = writes[handle]
            for offset in range(0, len(repo_writes), MAX_WRITES_PER_CALL):
                batch = repo_writes[offset : offset + MAX_WRITES_PER_CALL]
                answer = client.procedure(
                    "com.atproto.repo.applyWrites", {"repo": account.did, "writes": batch}, token=account.access_jwt
                )
                for result in answer.get("results", []):
                    if expected_cids.get(result["uri"]) != result["cid"]:
                        raise SeedError(
                            f"CID mismatch for {result['uri']}: PDS {result['cid']}, local "
                            f"{expected_cids.get(result['uri'])}"
                        )
                done[0] += len(batch)
                if time.monotonic() - last_report[0] > 5:
                    last_report[0] = time.monotonic()
                    rate = done[0] / (time.monotonic() - started)
                    progress(f"[seed] {done[0]:,}/{total:,} records ({rate:,.0f}/s)")
            return len(repo_writes)

        # Biggest repos first so the long pole (the agent) starts at once.
        order = sorted(writes, key=lambda h: -len(writes[h]))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            written = sum(pool.map(seed_repo, order))

        deleted = 0
        to_delete: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in corpus.records:
            if record.deleted:
                to_delete[record.author].append(
                    {
                        "$type": "com.atproto.repo.applyWrites#delete",
                        "collection": record.collection,
                        "rkey": record.rkey,
                    }
                )
        for handle, deletes in to_delete.items():
            account = accounts[handle]
            client = XrpcClient(account.pds_url, client=http)
            for offset in range(0, len(deletes), MAX_WRITES_PER_CALL):
                client.procedure(
                    "com.atproto.repo.applyWrites",
                    {"repo": account.did, "writes": deletes[offset : offset + MAX_WRITES_PER_CALL]},
                    token=account.access_jwt,
                )
            deleted += len(deletes)

    seconds = time.monotonic() - started
    manifest = pl.DataFrame(
        rows, schema_overrides={"duplicate_of": pl.String, "thread": pl.String, "parent": pl.String}
    )
    result = SeedResult(accounts, manifest, written, deleted, seconds)
    progress(
        f"[seed] {written:,} records written, {deleted} deleted in {seconds:.1f}s "
        f"({result.records_per_second:,.0f} records/s)"
    )
    if out_dir is not None:
        write_manifest(result, Path(out_dir))
    return result


def write_manifest(result: SeedResult, out_dir: Path) -> None:
    buffer = io.BytesIO()
    result.manifest.write_parquet(buffer)
    write_bytes_atomic(out_dir / MANIFEST_FILE, buffer.getvalue())
    accounts = {h: {"did": a.did, "pds_url": a.pds_url} for h, a in result.accounts.items()}
    write_text_atomic(out_dir / ACCOUNTS_FILE, json.dumps(accounts, indent=2, sort_keys=True))
