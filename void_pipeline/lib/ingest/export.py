"""Export one collection of a repo to Parquet: the CAR fast path, or listRecords with a resumable checkpoint.

Layout under the agent's ingest folder (``<data>/agents/<name>/ingest/``, lib/layout.py)::

    cars/<rev>.car                   full repo CAR, shared by every collection exported at that revision
    cars/<rev>.since-<old>.car       diff CAR for an incremental run
    raw_records/<collection>.parquet           kept records (RAW_SCHEMA)
    raw_records/<collection>.rejected.parquet  quarantined records with a reason (REJECTED_SCHEMA)
    raw_records/<collection>.state.json        last exported revision and counts
    listing/<collection>/checkpoint.json + page-NNNNNN.json   an unfinished listRecords export
    thread_context/thread_context.parquet, thread_context/post_cache.jsonl   (lib/ingest/threads.py)

Every file is written atomically and the state last, so a killed run resumes without loss or duplicates.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from void_pipeline.lib.files import acquire_owner, locked, write_bytes_atomic, write_parquet_atomic, write_text_atomic
from void_pipeline.lib.ingest.deletions import Gone, record_deletions
from void_pipeline.lib.ingest.records import (
    POST,
    Rejection,
    normalise_record,
    rejected_frame,
    rejected_row,
    require_collection,
    rows_frame,
)
from void_pipeline.lib.ingest.repo_car import CarError, RepoWalk, decode_nodes, encode_nodes, read_repo_car
from void_pipeline.lib.ingest.resilience import TransportFailure
from void_pipeline.lib.ingest.xrpc import XrpcClient, XrpcError
from void_pipeline.lib.layout import IngestPaths

Method = Literal["car", "list_records"]
LIST_LIMIT = 100  # com.atproto.repo.listRecords maximum (101 → HTTP 400)


@dataclass(frozen=True)
class ExportOptions:
    method: Method = "car"
    incremental: bool = True  # diff against the last exported revision (CAR: getRepo?since=; sees deletions)
    full_refresh: bool = False  # export everything again (sees deletions on either method)
    fallback: bool = True  # CAR failure → listRecords automatically


@dataclass
class CollectionExport:
    did: str  # whose repo: a state from another DID never seeds an incremental run
    collection: str
    method: Method
    rev: str | None
    full: bool
    fetched: int = 0  # records seen this run (kept + quarantined)
    kept: int = 0
    quarantined: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    removed_uris: list[str] = field(default_factory=list)  # gone from the repo since the last export
    total_rows: int = 0
    total_rejected: int = 0
    car_bytes: int = 0
    car_downloaded: bool = False
    fallback_reason: str | None = None
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class CorruptState(RuntimeError):
    """A file this pipeline wrote cannot be read; the message names it and says what to do."""


FULL_REFRESH_HINT = (
    "export it again with a full refresh (`void-pipeline export ... --full-refresh`, or raw_records' config "
    "`full_refresh: true`), which rebuilds it from the PDS without reading it"
)


def read_state(paths: IngestPaths, collection: str) -> dict[str, Any] | None:
    path = paths.state(collection)
    if not path.exists():
        return None
    try:
        loaded = json.loads(path.read_bytes())
    except ValueError as err:
        raise CorruptState(f"{path} is not valid JSON ({err}): {FULL_REFRESH_HINT}") from err
    if not isinstance(loaded, dict):
        raise CorruptState(f"{path} does not hold an export state: {FULL_REFRESH_HINT}")
    return loaded


def read_parquet_output(path: Path, remedy: str) -> pl.DataFrame:
    """A Parquet file the pipeline wrote; one that cannot be read raises ``CorruptState`` naming it."""
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorruptState(f"{path} cannot be read ({first_line}): {remedy}") from err


# --- the CAR path -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CarSnapshot:
    path: Path | None  # None: nothing changed since ``since``
    rev: str
    since: str | None
    downloaded: bool
    size: int


def latest_rev(pds: XrpcClient, did: str) -> str:
    """The revision of the repo's latest commit."""
    return str(pds.query("com.atproto.sync.getLatestCommit", did=did)["rev"])


def fetch_repo_car(pds: XrpcClient, did: str, cars_dir: Path, since: str | None) -> CarSnapshot:
    """The repo CAR at its latest revision (full, or the diff since ``since``), downloaded once per revision."""
    rev = latest_rev(pds, did)
    if since == rev:
        return CarSnapshot(None, rev, since, False, 0)
    path = cars_dir / (f"{rev}.car" if since is None else f"{rev}.since-{since}.car")
    with locked(cars_dir / ".lock"):  # partitions running side by side share one download
        if path.exists():
            return CarSnapshot(path, rev, since, False, path.stat().st_size)
        data = pds.query_raw("com.atproto.sync.getRepo", did=did, since=since).content
        write_bytes_atomic(path, data)
    return CarSnapshot(path, rev, since, True, len(data))


def kept_nodes(paths: IngestPaths, rev: str) -> dict[bytes, Any] | None:
    """The MST nodes kept from the export at ``rev``; None when there are none (or they cannot be read)."""
    path = paths.mst_nodes(rev)
    try:
        return decode_nodes(path.read_bytes()) if path.exists() else None
    except CarError:
        return None


def walk_snapshot(
    pds: XrpcClient, did: str, paths: IngestPaths, since: str | None, log: Callable[[str], None] = print
) -> tuple[CarSnapshot, RepoWalk | None]:
    """Fetch and walk the CAR; a corrupt cached or downloaded CAR is fetched once more before giving up.

    A diff is walked together with the tree kept at ``since``, so the walk holds every key of the repo (deleted
    records are the ones missing). Without that tree, or when the diff reuses a node it does not hold (a subtree
    back to an older state), the whole repo is fetched instead: ``snapshot.since`` is then None.
    """
    known = kept_nodes(paths, since) if since is not None else None
    if since is not None and known is None:
        log(f"[export] no MST kept from revision {since}: fetching the whole repo once, to see what was deleted")
        since = None
    corrupt = 0
    while True:
        snapshot = fetch_repo_car(pds, did, paths.cars, since)
        if snapshot.path is None:
            return snapshot, None
        try:
            walk = read_repo_car(snapshot.path.read_bytes(), did, partial=since is not None, known_nodes=known)
        except CarError:
            snapshot.path.unlink(missing_ok=True)
            corrupt += 1
            if corrupt == 2:
                raise
            continue
        if not walk.whole_tree:
            log(f"[export] the diff since {since} reuses {walk.unknown_nodes} MST node(s) not kept: fetching it whole")
            since, known = None, None
            continue
        if not paths.mst_nodes(walk.rev).exists():
            write_bytes_atomic(paths.mst_nodes(walk.rev), encode_nodes(walk.nodes))
        return snapshot, walk


# --- the listRecords path ---------------------------------------------------------------------------------


def list_records_resumable(
    pds: XrpcClient,
    did: str,
    collection: str,
    work_dir: Path,
    known: dict[str, str] | None,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """All records of ``collection`` via listRecords, 100 per page, checkpointed after every page.

    With ``known`` (uri → cid of what we have), stops at the first page holding nothing new: listRecords
    returns the newest records first. A killed run resumes at the checkpoint's cursor.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = work_dir / "checkpoint.json"
    checkpoint: dict[str, Any] = {"cursor": None, "pages": 0, "done": False}
    if checkpoint_path.exists():
        try:
            checkpoint = {**checkpoint, **json.loads(checkpoint_path.read_bytes())}
        except ValueError as err:
            raise CorruptState(
                f"the listRecords checkpoint {checkpoint_path} is not valid JSON ({err}): delete {work_dir} to list "
                f"{collection} from the start, or {FULL_REFRESH_HINT}"
            ) from err
    if checkpoint["pages"]:
        log(f"[export] {collection}: resuming listRecords after page {checkpoint['pages']}")
    while not checkpoint["done"]:
        page = pds.query(
            "com.atproto.repo.listRecords",
            repo=did,
            collection=collection,
            limit=LIST_LIMIT,
            cursor=checkpoint["cursor"],
        )
        records = page.get("records", [])
        if records:
            number = checkpoint["pages"] + 1
            write_text_atomic(work_dir / f"page-{number:06d}.json", json.dumps(records))
            checkpoint = {"cursor": page.get("cursor"), "pages": number, "done": False}
        nothing_new = known is not None and all(known.get(r.get("uri")) == r.get("cid") for r in records)
        # The last page can still carry a cursor (the PDS does not know it is the last): stop on an empty page.
        if not records or page.get("cursor") is None or nothing_new:
            checkpoint["done"] = True
        write_text_atomic(checkpoint_path, json.dumps(checkpoint))
        if checkpoint["pages"] % 50 == 0 and records:
            log(f"[export] {collection}: {checkpoint['pages']} pages listed")
    seen: dict[str, dict[str, Any]] = {}
    for number in range(1, checkpoint["pages"] + 1):
        page_path = work_dir / f"page-{number:06d}.json"
        try:
            listed = json.loads(page_path.read_bytes())
        except (OSError, ValueError) as err:
            raise CorruptState(
                f"{page_path} of an unfinished listing cannot be read ({err}): delete {work_dir} to list "
                f"{collection} from the start, or {FULL_REFRESH_HINT}"
            ) from err
        for record in listed:
            seen.setdefault(str(record.get("uri")), record)
    return list(seen.values())


# --- one collection ---------------------------------------------------------------------------------------


def repo_collections(pds: XrpcClient, did: str) -> list[str] | None:
    """The collections the repo holds records of (com.atproto.repo.describeRepo); None when it can't say."""
    try:
        described = pds.query("com.atproto.repo.describeRepo", repo=did)
    except (XrpcError, TransportFailure):
        return None
    names = described.get("collections")
    return sorted(str(n) for n in names) if isinstance(names, list) else None


def unknown_collection_warnings(requested: list[str], held: list[str] | None) -> list[str]:
    """A warning for each requested collection the repo has never held (a typo exports 0 rows otherwise)."""
    if held is None:
        return []
    return [
        f"the repo holds no {name} records: is the name right? It holds: {', '.join(held) or 'nothing'}"
        for name in requested
        if name not in held
    ]


def export_collection(
    pds: XrpcClient,
    did: str,
    collection: str,
    paths: IngestPaths,
    options: ExportOptions = ExportOptions(),
    log: Callable[[str], None] = print,
) -> CollectionExport:
    """Export ``collection`` of ``did`` into ``paths``; returns what happened, for metadata.

    One writer per collection folder: a second export of the same collection raises ``Busy`` naming the first.
    """
    require_collection(collection)
    with acquire_owner(paths.writer_lock(collection), f"exporting {collection}", f"the {collection} export"):
        return _export_collection(pds, did, collection, paths, options, log)


def _export_collection(
    pds: XrpcClient,
    did: str,
    collection: str,
    paths: IngestPaths,
    options: ExportOptions,
    log: Callable[[str], None],
) -> CollectionExport:
    if options.full_refresh:
        # Rebuilt from the PDS: earlier state is only read for the counts, and ignored if unreadable.
        state, existing = None, None
        shutil.rmtree(paths.listing(collection), ignore_errors=True)
        if paths.records(collection).exists():
            try:
                existing = read_parquet_output(paths.records(collection), "")
            except CorruptState as err:
                log(f"[export] {collection}: full refresh: ignoring an unreadable earlier table ({err})")
    else:
        state = read_state(paths, collection)
        existing = (
            read_parquet_output(paths.records(collection), FULL_REFRESH_HINT)
            if paths.records(collection).exists()
            else None
        )
    if state is not None and state.get("did", did) != did:
        log(f"[export] {collection}: the earlier export is of {state.get('did')}, not {did}: exporting in full")
        state = None
    incremental = options.incremental and not options.full_refresh and state is not None and existing is not None
    method: Method = options.method
    result = CollectionExport(did, collection, method, None, full=not incremental)
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []

    def take(uri: str, cid: str, value: Any, rkey: str) -> None:
        outcome = normalise_record(did, collection, rkey, cid, value)
        if isinstance(outcome, Rejection):
            rejected.append(rejected_row(uri, cid, collection, outcome, value))
        else:
            kept.append(outcome)

    gone: set[str] = set()
    if method == "car":
        since = state.get("rev") if incremental and state else None
        try:
            snapshot, walk = walk_snapshot(pds, did, paths, since, log)
            result.rev, result.car_bytes, result.car_downloaded = snapshot.rev, snapshot.size, snapshot.downloaded
            if incremental and walk is not None and snapshot.since is None:
                incremental, result.full = False, True  # fetched whole: exported in full
            if incremental and walk is not None and existing is not None:
                gone = {u for u in existing["uri"] if u.removeprefix(f"at://{did}/") not in walk.keys}
            if walk is not None:
                for record in walk.in_collection(collection):
                    take(f"at://{did}/{collection}/{record.rkey}", record.cid, record.value, record.rkey)
                for problem in walk.problems:
                    if problem.key.startswith(f"{collection}/") or not problem.key:
                        uri = f"at://{did}/{problem.key}" if problem.key else ""
                        rejected.append(
                            rejected_row(uri, problem.cid, collection, Rejection(problem.reason, "from the CAR"), None)
                        )
        except (CarError, TransportFailure, XrpcError) as err:
            if not options.fallback:
                raise
            result.fallback_reason = f"{type(err).__name__}: {err}"
            log(f"[export] {collection}: CAR path failed ({result.fallback_reason}); falling back to listRecords")
            method = result.method = "list_records"
            kept.clear()
            rejected.clear()
            gone.clear()

    if method == "list_records":
        result.rev = latest_rev(pds, did)
        known = (
            dict(zip(existing["uri"], existing["cid"], strict=True)) if incremental and existing is not None else None
        )
        for listed in list_records_resumable(pds, did, collection, paths.listing(collection), known, log):
            uri, cid = str(listed.get("uri", "")), str(listed.get("cid", ""))
            if not uri.startswith(f"at://{did}/{collection}/"):
                rejected.append(rejected_row(uri, cid, collection, Rejection("malformed_uri", uri), listed))
                continue
            take(uri, cid, listed.get("value"), uri.rsplit("/", 1)[-1])

    fresh = rows_frame(kept)
    result.fetched, result.kept, result.quarantined = len(kept) + len(rejected), len(kept), len(rejected)
    merged = merge_rows(existing, fresh, result, full=not incremental, gone=gone)
    if collection == POST:  # the ledger first: a run killed before the table is written finds them again
        own = [u for u in result.removed_uris if u.startswith(f"at://{did}/")]  # not another DID's old rows
        record_deletions(paths, (Gone(u, "deleted", "own_export", own=True) for u in own))
    old_rejected = (
        read_parquet_output(paths.rejected(collection), FULL_REFRESH_HINT)
        if incremental and paths.rejected(collection).exists()
        else None
    )
    new_rejected = rejected_frame(rejected)
    if old_rejected is not None and incremental:
        new_rejected = pl.concat([old_rejected, new_rejected]).unique(subset=["uri", "cid", "reason"], keep="last")
    write_parquet_atomic(merged, paths.records(collection))
    write_parquet_atomic(new_rejected, paths.rejected(collection))
    result.total_rows, result.total_rejected = merged.height, new_rejected.height
    result.rejected_by_reason = dict(new_rejected.group_by("reason").len().iter_rows()) if new_rejected.height else {}
    write_text_atomic(paths.state(collection), json.dumps(asdict(result), indent=2, default=str))
    if method == "list_records":
        shutil.rmtree(paths.listing(collection), ignore_errors=True)
    prune_kept_nodes(paths)
    return result


def prune_kept_nodes(paths: IngestPaths) -> None:
    """Delete the kept MST nodes of revisions no collection's state names any more (a few MB each for a big repo;
    the next diff of every collection starts from the revision its state names). Recent ones stay: a partition
    running beside this one may have just written its own, before its state."""
    named = set()
    for state in paths.root.glob(str(paths.state("*").relative_to(paths.root))):
        try:
            named.add(json.loads(state.read_bytes()).get("rev"))
        except (OSError, ValueError, AttributeError):
            return  # a state that cannot be read: keep everything rather than guess
    suffix = paths.mst_nodes("").name
    for kept in paths.cars.glob(f"*{suffix}"):
        with contextlib.suppress(FileNotFoundError):  # another partition pruned it first
            if kept.name.removesuffix(suffix) not in named and kept.stat().st_mtime < time.time() - 3600:
                kept.unlink()


def merge_rows(
    existing: pl.DataFrame | None,
    fresh: pl.DataFrame,
    result: CollectionExport,
    full: bool,
    gone: Iterable[str] = (),
) -> pl.DataFrame:
    """Upsert ``fresh`` into ``existing`` by uri, dropping the ``gone`` URIs (a full export replaces it: what it
    lacks is gone); counts and the removed URIs go into ``result``."""
    if existing is None or existing.height == 0:
        result.new = fresh.height
        return fresh.sort("created_at", "uri")
    old = dict(zip(existing["uri"], existing["cid"], strict=True))
    result.new = sum(1 for uri in fresh["uri"] if uri not in old)
    result.changed = sum(
        1 for uri, cid in zip(fresh["uri"], fresh["cid"], strict=True) if uri in old and old[uri] != cid
    )
    if full:
        result.removed_uris = sorted(set(old) - set(fresh["uri"]))
        result.removed = len(result.removed_uris)
        return fresh.sort("created_at", "uri")
    result.removed_uris = sorted(set(gone) & set(old))
    result.removed = len(result.removed_uris)
    dropped = pl.Series([*fresh["uri"], *result.removed_uris], dtype=pl.String())
    kept_old = existing.filter(~pl.col("uri").is_in(dropped.implode()))
    return pl.concat([kept_old, fresh]).sort("created_at", "uri")
