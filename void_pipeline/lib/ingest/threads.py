"""Every reply's ancestor chain up to its thread root, fetched level by level.

Each level batches all ancestors not known yet across every reply: ``app.bsky.feed.getPosts`` (25 URIs per
call, de-duplicated, bounded concurrency) on the AppView, then ``com.atproto.repo.getRecord`` on the owner's
PDS (DID → PDS cached) for what the AppView left out. The agent's own exported posts are never fetched. A post
cache (JSON lines, appended and fsynced per batch) persists across runs, so re-materializing fetches only URIs
never seen; a killed run loses at most the batch in flight. Ancestors that cannot be had keep a reason:
``deleted``, ``not_found``, ``taken_down``, ``deactivated``, ``blocked``, ``pds_unreachable``,
``identity_unresolvable``, ``invalid_uri``.

A re-check (``recheck_ancestors``) asks again for every available ancestor of other authors the cache holds, in
getPosts batches; the few the AppView leaves out are asked of their PDS, which tells ``deleted``, ``taken_down`` and
``deactivated`` apart. What is gone enters the deletions ledger and the cache forgets its text (the file is
rewritten). A checkpoint after every batch lets a run stopped by rate limits, or killed, resume where it stopped.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.ingest.deletions import REASONS, Gone, record_deletions
from void_pipeline.lib.ingest.identity import IdentityError, IdentityResolver
from void_pipeline.lib.ingest.resilience import ResilientHttp, TransportFailure
from void_pipeline.lib.ingest.xrpc import XrpcClient, XrpcError
from void_pipeline.lib.layout import IngestPaths

GET_POSTS_LIMIT = 25  # app.bsky.feed.getPosts lexicon maximum
RECHECK_BATCH = GET_POSTS_LIMIT * 8  # URIs re-checked between two checkpoints
TRANSIENT_REASONS = frozenset({"pds_unreachable", "identity_unresolvable"})  # retried on the next run
TAKEDOWN_ERRORS = frozenset({"RepoTakendown", "RepoSuspended", "AccountTakedown"})
DEACTIVATED_ERRORS = frozenset({"RepoDeactivated", "AccountDeactivated"})

ANCESTOR_STRUCT = pl.Struct(
    {
        "uri": pl.String(),
        "cid": pl.String(),
        "author_did": pl.String(),
        "author_handle": pl.String(),
        "text": pl.String(),
        "created_at": pl.String(),
        "available": pl.Boolean(),
        "reason": pl.String(),
        "source": pl.String(),
        "author_display_name": pl.String(),
        "record_json": pl.String(),
        "embed_json": pl.String(),
    }
)
THREAD_SCHEMA: dict[str, pl.DataType] = {
    "uri": pl.String(),
    "parent_uri": pl.String(),
    "root_uri": pl.String(),
    "depth": pl.Int32(),
    "complete": pl.Boolean(),
    "missing_reason": pl.String(),
    "ancestors": pl.List(ANCESTOR_STRUCT),
}


@dataclass(frozen=True)
class Post:
    uri: str
    cid: str | None
    author_did: str | None
    author_handle: str | None
    text: str | None
    created_at: str | None
    parent_uri: str | None
    root_uri: str | None
    available: bool
    reason: str | None
    source: str  # export | appview | pds | none
    author_display_name: str | None = None  # from getPosts' author view (the agent's: its profile)
    record_json: str | None = None  # the record itself (facets, embeds): what the handler's thread YAML shows
    embed_json: str | None = None  # the AppView's post-level embed view (getPosts), as the handler sees it too

    def ancestor(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in ANCESTOR_STRUCT.fields}


def unavailable(uri: str, reason: str) -> Post:
    return Post(uri, None, did_of(uri), None, None, None, None, None, False, reason, "none")


def did_of(uri: str) -> str | None:
    parts = uri.removeprefix("at://").split("/")
    return parts[0] if uri.startswith("at://") and len(parts) == 3 and parts[0].startswith("did:") else None


def post_from_record(
    uri: str,
    cid: str | None,
    value: Any,
    did: str,
    handle: str | None,
    source: str,
    display_name: str | None = None,
    embed: Any = None,
) -> Post:
    record: dict[str, Any] = value if isinstance(value, dict) else {}
    reply: dict[str, Any] = record["reply"] if isinstance(record.get("reply"), dict) else {}
    parent: dict[str, Any] = reply["parent"] if isinstance(reply.get("parent"), dict) else {}
    root: dict[str, Any] = reply["root"] if isinstance(reply.get("root"), dict) else {}
    text = record.get("text")
    return Post(
        uri=uri,
        cid=cid,
        author_did=did,
        author_handle=handle,
        text=text if isinstance(text, str) else None,
        created_at=record.get("createdAt") if isinstance(record.get("createdAt"), str) else None,
        parent_uri=parent.get("uri") if isinstance(parent.get("uri"), str) else None,
        root_uri=root.get("uri") if isinstance(root.get("uri"), str) else None,
        available=True,
        reason=None,
        source=source,
        author_display_name=display_name if isinstance(display_name, str) and display_name.strip() else None,
        record_json=json.dumps(record, ensure_ascii=False, sort_keys=True) if record else None,
        embed_json=json.dumps(embed, ensure_ascii=False, sort_keys=True) if isinstance(embed, dict) else None,
    )


class PostCache:
    """uri → Post, persisted as JSON lines; the last line for a URI wins; a torn last line is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._posts: dict[str, Post] = {}
        self._lock = threading.Lock()
        self.discarded = ""  # what could not be read, for a warning: it is only a cache
        if not path.exists():
            return
        bad: list[int] = []
        try:
            lines = path.read_bytes().splitlines()
        except OSError as err:
            lines, self.discarded = [], f"post cache {path} cannot be read ({err}); starting an empty one"
        for number, line in enumerate(lines):
            try:
                post = Post(**json.loads(line))  # bytes: a line that is not UTF-8 fails here, alone
            except (ValueError, TypeError):
                bad.append(number)  # a write cut short by a kill, or damage: that post is simply fetched again
                continue
            self._posts[post.uri] = post
        if bad and bad != [len(lines) - 1]:  # more than a torn last line: say so, and keep only what reads
            self.discarded = (
                f"post cache {path}: {len(bad):,} unreadable line(s) discarded, {len(self._posts):,} posts kept "
                "(those posts are fetched again)"
            )
            self._rewrite()

    def _rewrite(self) -> None:
        data = "".join(json.dumps(asdict(p)) + "\n" for p in self._posts.values() if p.reason not in TRANSIENT_REASONS)
        write_text_atomic(self.path, data)

    def __contains__(self, uri: object) -> bool:
        return uri in self._posts

    def __len__(self) -> int:
        return len(self._posts)

    def get(self, uri: str) -> Post | None:
        return self._posts.get(uri)

    def posts(self) -> list[Post]:
        with self._lock:
            return list(self._posts.values())

    def forget(self, gone: dict[str, str]) -> int:
        """Keep only the reason of the posts in ``gone`` (uri → reason): their text leaves the file, which is
        rewritten atomically. Returns how many cached posts lost their content."""
        with self._lock:
            held = [u for u in gone if (p := self._posts.get(u)) is not None and (p.available or p.reason != gone[u])]
            for uri in held:
                self._posts[uri] = unavailable(uri, gone[uri])
            if held:
                self._rewrite()
        return len(held)

    def add(self, posts: Iterable[Post]) -> None:
        durable = [p for p in posts if p.reason not in TRANSIENT_REASONS]
        with self._lock:
            for post in posts:
                self._posts[post.uri] = post
            if not durable:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                handle.write("".join(json.dumps(asdict(p)) + "\n" for p in durable))
                handle.flush()
                os.fsync(handle.fileno())


@dataclass
class FetchStats:
    levels: int = 0
    get_posts_calls: int = 0
    get_record_calls: int = 0
    from_cache: int = 0
    from_export: int = 0
    fetched: int = 0
    unavailable: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "unavailable"}, "unavailable": dict(self.unavailable)}


@dataclass
class RecheckStats:
    held: int = 0  # available ancestors of other authors in the cache
    checked: int = 0  # of them, re-checked by this run
    get_posts_calls: int = 0
    get_record_calls: int = 0
    requests: int = 0  # every HTTP request it sent: the calls above, getRepoStatus, DID lookups, retries
    gone: Counter[str] = field(default_factory=Counter)  # newly in the ledger, by reason
    unanswered: int = 0  # left out by the AppView and their PDS could not say: not counted as gone
    resumed: bool = False  # went on from an earlier run's checkpoint
    finished: bool = False  # reached the end of the cache (the next run starts over)
    stopped_by: str = ""  # why it stopped before the end; the next run resumes there

    @property
    def requests_per_1000(self) -> float:
        return round(1000 * self.requests / self.checked, 1) if self.checked else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gone": dict(self.gone), "requests_per_1000": self.requests_per_1000}


class AncestorFetcher:
    def __init__(
        self,
        http: ResilientHttp,
        appview_url: str | None,
        identities: IdentityResolver,
        cache: PostCache,
        concurrency: int = 8,
        log: Callable[[str], None] = print,
    ) -> None:
        self.http = http
        self.appview = XrpcClient(appview_url, client=http) if appview_url else None
        self.identities = identities
        self.cache = cache
        self.concurrency = concurrency
        self.log = log
        self.stats = FetchStats()
        self._stats_lock = threading.Lock()
        self._repo_reasons: dict[str, str] = {}

    def ensure(self, uris: Iterable[str]) -> None:
        """Make every URI known to the cache (available, or with the reason it is not)."""
        need = sorted({u for u in uris if u not in self.cache})
        self.stats.from_cache += len({u for u in uris}) - len(need)
        if not need:
            return
        missing = need
        if self.appview is not None:
            chunks = [need[i : i + GET_POSTS_LIMIT] for i in range(0, len(need), GET_POSTS_LIMIT)]
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                found = {p.uri for batch in pool.map(self._get_posts, chunks) for p in batch}
            missing = [u for u in need if u not in found]
        if missing:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                for post in pool.map(self._get_record, missing):
                    self.cache.add([post])

    def gone_among(self, uris: list[str]) -> tuple[dict[str, str], int]:
        """Which of ``uris`` (cached posts) are gone now: uri → deleted / taken_down / deactivated, and how many could
        not be told. getPosts first (25 a call; it leaves out what it cannot show); only those left out are asked of
        their PDS. A getPosts call that fails (429s beyond the retries, the AppView down) raises: nothing is decided."""
        present: set[str] = set()
        missing = uris
        if self.appview is not None:
            chunks = [uris[i : i + GET_POSTS_LIMIT] for i in range(0, len(uris), GET_POSTS_LIMIT)]
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                for found in pool.map(self._present, chunks):
                    present |= found
            missing = [u for u in uris if u not in present]
        gone: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            answers = list(pool.map(self._get_record, missing))
        for post in answers:
            if not post.available and post.reason in REASONS:
                gone[post.uri] = str(post.reason)
        return gone, sum(1 for p in answers if not p.available and p.reason not in REASONS)

    def _present(self, uris: list[str]) -> set[str]:
        assert self.appview is not None
        with self._stats_lock:
            self.stats.get_posts_calls += 1
        answer = self.appview.query("app.bsky.feed.getPosts", uris=uris)
        return {str(view.get("uri")) for view in answer.get("posts", [])} & set(uris)

    def _get_posts(self, uris: list[str]) -> list[Post]:
        assert self.appview is not None
        with self._stats_lock:
            self.stats.get_posts_calls += 1
        try:
            answer = self.appview.query("app.bsky.feed.getPosts", uris=uris)
        except (XrpcError, TransportFailure) as err:
            self.log(f"[threads] getPosts failed for {len(uris)} URIs ({err}); falling back to getRecord")
            return []
        posts = []
        wanted = set(uris)
        for view in answer.get("posts", []):
            uri = view.get("uri")
            author = view.get("author") or {}
            if uri in wanted and isinstance(author.get("did"), str):
                posts.append(
                    post_from_record(
                        uri,
                        view.get("cid"),
                        view.get("record"),
                        author["did"],
                        author.get("handle"),
                        "appview",
                        author.get("displayName"),
                        view.get("embed"),
                    )
                )
        self.cache.add(posts)
        with self._stats_lock:
            self.stats.fetched += len(posts)
        return posts

    def _get_record(self, uri: str) -> Post:
        with self._stats_lock:
            self.stats.get_record_calls += 1
        did = did_of(uri)
        if did is None:
            return unavailable(uri, "invalid_uri")
        _, collection, rkey = uri.removeprefix("at://").split("/")
        try:
            identity = self.identities.identity(did)
        except IdentityError:
            return unavailable(uri, "identity_unresolvable")
        try:
            record = XrpcClient(identity.pds_url, client=self.http).query(
                "com.atproto.repo.getRecord", repo=did, collection=collection, rkey=rkey
            )
        except TransportFailure:
            return unavailable(uri, "pds_unreachable")
        except XrpcError as err:
            reason = reason_for(err)
            return unavailable(uri, self._repo_reason(identity.pds_url, did) if reason == "not_found" else reason)
        with self._stats_lock:
            self.stats.fetched += 1
        return post_from_record(uri, record.get("cid"), record.get("value"), did, identity.handle, "pds")

    def _repo_reason(self, pds_url: str, did: str) -> str:
        """Why a repo's records cannot be read: com.atproto.sync.getRepoStatus tells takedowns apart."""
        with self._stats_lock:
            if did in self._repo_reasons:
                return self._repo_reasons[did]
        try:
            status = XrpcClient(pds_url, client=self.http).query("com.atproto.sync.getRepoStatus", did=did)
            state = str(status.get("status", "")) if not status.get("active", True) else ""
            reason = {"takendown": "taken_down", "suspended": "taken_down", "deactivated": "deactivated"}.get(
                state, "not_found"
            )
        except XrpcError as err:
            reason = reason_for(err) if err.error in TAKEDOWN_ERRORS | DEACTIVATED_ERRORS else "not_found"
        except TransportFailure:
            reason = "pds_unreachable"
        with self._stats_lock:
            self._repo_reasons[did] = reason
        return reason


def recheck_ancestors(
    fetcher: AncestorFetcher,
    agent_did: str,
    paths: IngestPaths,
    log: Callable[[str], None] = print,
    batch_size: int = RECHECK_BATCH,
) -> RecheckStats:
    """Ask again for every available ancestor of other authors the cache holds (in URI order, from the checkpoint
    on); the gone ones enter the ledger (source recheck) and the cache forgets them. Stops at the first batch whose
    getPosts fails, leaving the checkpoint there."""
    stats = RecheckStats()
    held = sorted(p.uri for p in fetcher.cache.posts() if p.available and p.author_did != agent_did)
    stats.held = len(held)
    after = read_recheck_checkpoint(paths)
    stats.resumed = after is not None
    todo = [u for u in held if after is None or u > after]
    if after is not None:
        log(f"[recheck] resuming after {after}: {len(todo):,} of {len(held):,} ancestors left")
    calls_before = (fetcher.stats.get_posts_calls, fetcher.stats.get_record_calls, fetcher.http.stats.requests)
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            try:
                gone, unanswered = fetcher.gone_among(batch)
            except (TransportFailure, XrpcError) as err:
                stats.stopped_by = f"{type(err).__name__}: {err}"
                log(f"[recheck] stopped after {stats.checked:,} ancestors ({stats.stopped_by}); the next run resumes")
                return stats
            record_deletions(paths, (Gone(u, r, "recheck", own=False) for u, r in gone.items()))  # type: ignore[arg-type]
            fetcher.cache.forget(gone)
            stats.gone.update(gone.values())
            stats.checked += len(batch)
            stats.unanswered += unanswered
            write_text_atomic(paths.recheck_checkpoint, json.dumps({"after": batch[-1]}))
        paths.recheck_checkpoint.unlink(missing_ok=True)
        stats.finished = True
        return stats
    finally:
        stats.get_posts_calls = fetcher.stats.get_posts_calls - calls_before[0]
        stats.get_record_calls = fetcher.stats.get_record_calls - calls_before[1]
        stats.requests = fetcher.http.stats.requests - calls_before[2]


def read_recheck_checkpoint(paths: IngestPaths) -> str | None:
    """The last URI an unfinished re-check got through; None to start from the beginning (also for a damaged file:
    re-checking again is only a few requests more)."""
    try:
        after = json.loads(paths.recheck_checkpoint.read_bytes()).get("after")
    except (OSError, ValueError, AttributeError):
        return None
    return after if isinstance(after, str) else None


def reason_for(err: XrpcError) -> str:
    if err.error == "RecordNotFound":
        return "deleted"
    if err.error in TAKEDOWN_ERRORS:
        return "taken_down"
    if err.error in DEACTIVATED_ERRORS:
        return "deactivated"
    if err.status in (401, 403) or err.error in {"AuthRequired", "BlockedActor", "BlockedByActor"}:
        return "blocked"
    return "not_found"


def build_thread_context(
    replies: pl.DataFrame,
    own_posts: dict[str, Post],
    fetcher: AncestorFetcher,
    max_depth: int = 1000,
    gone: dict[str, str] | None = None,
) -> pl.DataFrame:
    """``replies`` has uri, reply_parent_uri, reply_root_uri; ``gone`` the ledger (uri → reason), whose posts are
    shown unavailable with their reason and never fetched. Returns one THREAD_SCHEMA row per reply."""
    stats = fetcher.stats
    gone = gone or {}

    def lookup(uri: str) -> Post:
        if uri in gone:
            return unavailable(uri, gone[uri])
        return own_posts.get(uri) or fetcher.cache.get(uri) or unavailable(uri, "not_found")

    parents = [u for u in replies["reply_parent_uri"].to_list() if u]
    roots = [u for u in replies["reply_root_uri"].to_list() if u]
    frontier = set(parents) | set(roots)
    seen: set[str] = set()
    while frontier:
        stats.levels += 1
        external = frontier - own_posts.keys() - gone.keys()
        stats.from_export += len(frontier - gone.keys()) - len(external)
        fetcher.ensure(external)
        seen |= frontier
        frontier = {
            p.parent_uri for p in map(lookup, frontier) if p.available and p.parent_uri and p.parent_uri not in seen
        }
        fetcher.log(f"[threads] level {stats.levels}: {len(seen):,} ancestors known, {len(frontier):,} to fetch next")

    rows = []
    for uri, parent_uri, root_uri in replies.select("uri", "reply_parent_uri", "reply_root_uri").iter_rows():
        chain: list[Post] = []
        next_uri = parent_uri
        visited = set()
        while next_uri and next_uri not in visited and len(chain) < max_depth:
            visited.add(next_uri)
            post = lookup(next_uri)
            chain.append(post)
            if not post.available:
                break
            next_uri = post.parent_uri
        reached_root = bool(chain) and chain[-1].available and chain[-1].parent_uri is None
        if not reached_root and root_uri and root_uri not in visited:
            chain.append(lookup(root_uri))  # the root, after a gap: the conversation's opening is still worth having
        chain.reverse()
        missing = next((p.reason for p in chain if not p.available), None)
        rows.append(
            {
                "uri": uri,
                "parent_uri": parent_uri,
                "root_uri": root_uri,
                "depth": len(chain),
                "complete": reached_root and missing is None,
                "missing_reason": missing,
                "ancestors": [p.ancestor() for p in chain],
            }
        )
    for post in {p.uri: p for row in rows for p in map(lookup, [a["uri"] for a in row["ancestors"]])}.values():
        if not post.available:
            stats.unavailable[post.reason or "unknown"] += 1
    return pl.DataFrame(rows, schema=THREAD_SCHEMA) if rows else pl.DataFrame(schema=THREAD_SCHEMA)


def own_posts_from_rows(rows: pl.DataFrame, handle: str | None, display_name: str | None = None) -> dict[str, Post]:
    """The agent's exported posts (RAW_SCHEMA rows) as known ancestors: no need to fetch them."""
    posts = {}
    columns = ("uri", "cid", "did", "text", "created_at", "reply_parent_uri", "reply_root_uri", "raw_json")
    for row in rows.select(columns).iter_rows(named=True):
        posts[row["uri"]] = Post(
            uri=row["uri"],
            cid=row["cid"],
            author_did=row["did"],
            author_handle=handle,
            text=row["text"],
            created_at=row["created_at"].isoformat().replace("+00:00", "Z") if row["created_at"] else None,
            parent_uri=row["reply_parent_uri"],
            root_uri=row["reply_root_uri"],
            available=True,
            reason=None,
            source="export",
            author_display_name=display_name,
            record_json=row["raw_json"],
        )
    return posts
