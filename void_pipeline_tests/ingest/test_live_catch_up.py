"""When agent_repo_sensor exports every collection instead of only those the firehose named: the decision on the
stream's own messages (the atproto SDK's models, as ``parse_subscribe_repos_message`` returns them). The live
path through a real PDS and daemon is ingest/test_live.py; a PDS cannot be made to send ``OutdatedCursor`` on
demand (it does for a cursor older than its backfill window, a day by default)."""

from __future__ import annotations

from atproto_client.models.com.atproto.sync import subscribe_repos

from void_pipeline.lib.ingest.live import RepoChanges

AGENT = "did:plc:agentagentagentagentagen"
OTHER = "did:plc:otherotherotherotherothe"
POST, MEMORY = "app.bsky.feed.post", "stream.thought.memory"


def commit(repo: str, seq: int, rev: str, *paths: str) -> subscribe_repos.Commit:
    ops = [subscribe_repos.RepoOp.model_construct(action="create", path=p, cid=None) for p in paths]
    return subscribe_repos.Commit.model_construct(repo=repo, seq=seq, rev=rev, ops=ops, blobs=[], blocks=b"")


def read(cursor: int | None, *messages: object) -> RepoChanges:
    changes = RepoChanges(did=AGENT, cursor=cursor)
    for message in messages:
        changes.take(message)
    return changes


def test_from_a_saved_cursor_only_the_collections_the_agent_committed_to_are_exported() -> None:
    changes = read(10, commit(AGENT, 11, "rev1", f"{POST}/a"), commit(OTHER, 12, "rev9", f"{MEMORY}/b"),
                   commit(AGENT, 13, "rev2", f"{POST}/c"))  # fmt: skip
    assert changes.catch_up_reason(resumed=True) is None
    assert changes.collections == {POST: "rev2"} and changes.cursor == 13 and changes.commits == 2


def test_an_outdated_cursor_catches_up_every_collection() -> None:
    outdated = subscribe_repos.Info(name="OutdatedCursor", message="Requested cursor exceeded limit")
    changes = read(10, outdated, commit(AGENT, 500, "rev7", f"{POST}/a"))
    assert changes.outdated_cursor and changes.cursor == 500
    assert "OutdatedCursor" in str(changes.catch_up_reason(resumed=True))


def test_without_a_cursor_for_this_agent_or_after_a_resync_every_collection_is_caught_up() -> None:
    first_tick = read(None, commit(AGENT, 3, "rev1", f"{POST}/a"))
    assert first_tick.catch_up_reason(resumed=False) is not None  # a first tick, or the cursor of another agent
    quiet = read(None)  # nothing was said live: no cursor learned
    assert quiet.catch_up_reason(resumed=True) is not None
    resynced = read(10, subscribe_repos.Sync.model_construct(did=AGENT, seq=11, rev="rev3", blocks=b"", time=""))
    assert resynced.catch_up_reason(resumed=True) is not None
    other_resynced = read(10, subscribe_repos.Sync.model_construct(did=OTHER, seq=11, rev="rev3", blocks=b"", time=""))
    assert other_resynced.catch_up_reason(resumed=True) is None and other_resynced.collections == {}
    other_info = read(10, subscribe_repos.Info(name="SomethingElse", message=None))
    assert other_info.catch_up_reason(resumed=True) is None
