"""What changed in the agent's repository since a firehose cursor: the PDS's ``com.atproto.sync.subscribeRepos``
read through the atproto SDK's firehose client, for a bounded time.

The reader only says *which collections* changed and at which repo revision; the records themselves are fetched
by the normal incremental export (raw_records), so nothing is written around it. The cursor is the stream's
``seq``: reading again from it replays what followed, so a reader restarted from a saved cursor loses nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from atproto import FirehoseSubscribeReposClient, models, parse_subscribe_repos_message
from atproto_client.models.com.atproto.sync import subscribe_repos

# How long one read may take at most, and how long the stream may be silent before it counts as caught up: a
# sensor tick has 60 s in all, and most of it should be left to launching runs.
DEFAULT_BUDGET_S = 20.0
DEFAULT_IDLE_S = 2.0
DEFAULT_MAX_EVENTS = 50_000


class _CountingClient(FirehoseSubscribeReposClient):  # type: ignore[misc]
    """The SDK's client, counting its dials: a second dial means the connection failed or dropped."""

    dials = 0

    def _before_connect(self) -> None:
        self.dials += 1


@dataclass
class RepoChanges:
    """One read of the stream: the collections of ``did`` with a commit since the cursor, each with the newest rev
    seen; ``cursor`` the seq to read from next time (the start cursor when nothing was read)."""

    did: str
    cursor: int | None
    collections: dict[str, str] = field(default_factory=dict)
    commits: int = 0
    deletes: int = 0  # delete ops among the agent's commits (raw_records' export sees which records went)
    events: int = 0
    outdated_cursor: bool = False  # the PDS no longer holds events that old: some changes may have been skipped
    stopped_by: str = ""  # "idle", "budget", "max_events" or "error: ..."
    account_status: str = ""  # the last #account event of the agent that said it is inactive

    @property
    def caught_up(self) -> bool:
        return self.stopped_by == "idle"

    def take(self, message: object) -> None:
        """Count one parsed stream message: its seq moves the cursor; the agent's commits name collections."""
        self.events += 1
        seq = getattr(message, "seq", None)
        if isinstance(seq, int):
            self.cursor = seq if self.cursor is None else max(self.cursor, seq)
        if isinstance(message, subscribe_repos.Info):
            if message.name == "OutdatedCursor":
                self.outdated_cursor = True
        elif isinstance(message, subscribe_repos.Commit) and message.repo == self.did:
            self.commits += 1
            for op in message.ops:
                self.deletes += op.action == "delete"
                collection = op.path.split("/", 1)[0]
                self.collections[collection] = max(self.collections.get(collection, ""), message.rev)
        elif isinstance(message, subscribe_repos.Sync) and message.did == self.did:
            self.collections["*"] = message.rev  # the repo was re-synced: every collection may have changed
        elif isinstance(message, subscribe_repos.Account) and message.did == self.did and not message.active:
            self.account_status = message.status or "inactive"

    def catch_up_reason(self, resumed: bool) -> str | None:
        """Why every collection must be exported again, because changes may have been missed — or None when the
        collections read are all that changed. ``resumed``: the read started from a cursor saved for this agent."""
        if not resumed:
            return "no saved cursor for this agent (a first tick, or another agent)"
        if self.cursor is None:
            return "the PDS said nothing live"
        if self.outdated_cursor:
            return "OutdatedCursor: the PDS no longer holds the events after the saved cursor"
        if "*" in self.collections:
            return "the repo was re-synced (#sync)"
        return None


def firehose_uri(pds_url: str) -> str:
    """The websocket base of a PDS's XRPC endpoint (http → ws, https → wss)."""
    base = pds_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/xrpc"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/xrpc"
    raise ValueError(f"not an http(s) URL: {pds_url!r}")


def read_changes(
    pds_url: str,
    did: str,
    cursor: int | None,
    budget_s: float = DEFAULT_BUDGET_S,
    idle_s: float = DEFAULT_IDLE_S,
    max_events: int = DEFAULT_MAX_EVENTS,
    log: Callable[[str], None] | None = None,
) -> RepoChanges:
    """Read the PDS's repo event stream from ``cursor`` (None: from now on) until it has been silent for ``idle_s``,
    ``budget_s`` has passed or ``max_events`` were read, and report the changes of ``did``'s repository."""
    changes = RepoChanges(did=did, cursor=cursor)
    params = models.ComAtprotoSyncSubscribeRepos.Params(cursor=cursor) if cursor is not None else None
    client = _CountingClient(params=params, base_uri=firehose_uri(pds_url))
    lock = threading.Lock()
    last_event = [time.monotonic()]
    errors: list[str] = []

    def on_message(frame: object) -> None:
        message = parse_subscribe_repos_message(frame)
        with lock:
            last_event[0] = time.monotonic()
            changes.take(message)
            if changes.events >= max_events:
                changes.stopped_by = "max_events"
                client.stop()

    def on_error(err: BaseException) -> None:
        errors.append(f"{type(err).__name__}: {err}")
        client.stop()

    def read() -> None:
        try:
            client.start(on_message, on_error)
        except Exception as err:  # the SDK raises what it does not retry (an error frame, a refused handshake)
            errors.append(f"{type(err).__name__}: {err}")

    reader = threading.Thread(target=read, daemon=True, name="firehose")
    started = time.monotonic()
    reader.start()
    while reader.is_alive():
        reader.join(0.1)
        now = time.monotonic()
        with lock:
            if changes.stopped_by:
                break
            if now - last_event[0] >= idle_s:
                changes.stopped_by = "idle"
            elif now - started >= budget_s:
                changes.stopped_by = "budget"
        if changes.stopped_by:
            client.stop()
    reader.join(5.0)
    if errors:
        changes.stopped_by = "error: " + errors[0]
    elif client.dials > 1:  # what looked like silence was a connection failing: not caught up
        changes.stopped_by = f"error: the connection to {firehose_uri(pds_url)} failed ({client.dials} dials)"
    elif not changes.stopped_by:
        changes.stopped_by = "error: the stream closed"
    if log is not None:
        log(
            f"firehose {pds_url}: {changes.events:,} events from cursor {cursor}, {changes.commits} commits of {did} "
            f"({changes.deletes} delete ops) "
            f"in {time.monotonic() - started:.1f}s, stopped by {changes.stopped_by}; next cursor {changes.cursor}"
        )
    return changes
