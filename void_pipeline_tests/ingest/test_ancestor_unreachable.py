"""The ancestor reasons ingest/test_ancestor_reasons.py does not reach: ``not_found`` (a repo its PDS does not hold),
``pds_unreachable`` (nothing answers at the PDS a DID document names) and ``blocked``. The DID documents are given
through the resolver's own on-disk cache, so no PLC operation is needed; the PDS is the shared devnet's."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest

from void_pipeline.lib.ingest.identity import IdentityResolver
from void_pipeline.lib.ingest.resilience import ResilientHttp, RetryPolicy
from void_pipeline.lib.ingest.threads import AncestorFetcher, PostCache, build_thread_context, reason_for
from void_pipeline.lib.ingest.xrpc import XrpcError
from void_pipeline.lib.serve.vllm_server import free_port
from void_pipeline.testworld.devnet import DevnetInfo

ELSEWHERE = "did:plc:" + "e" * 24  # its document names the devnet PDS, which holds no such repo
NOWHERE = "did:plc:" + "n" * 24  # its document names a port nothing listens on


def did_document(did: str, pds_url: str) -> dict[str, object]:
    return {
        "id": did,
        "alsoKnownAs": [f"at://{did[8:14]}.bsky.test"],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds_url}],
    }


@pytest.mark.integration  # the shared devnet
def test_a_repo_its_pds_lacks_and_a_pds_nobody_answers_keep_their_reason(devnet: DevnetInfo, tmp_path: Path) -> None:
    cache = tmp_path / "did-docs.json"
    docs = {ELSEWHERE: devnet.pds[0].url, NOWHERE: f"http://127.0.0.1:{free_port()}"}
    cache.write_text(
        json.dumps({"docs": {d: {"doc": did_document(d, url), "fetched_at": time.time()} for d, url in docs.items()}})
    )
    elsewhere = f"at://{ELSEWHERE}/app.bsky.feed.post/3kaaaaaaaaaaa"
    nowhere = f"at://{NOWHERE}/app.bsky.feed.post/3kbbbbbbbbbbb"
    replies = pl.DataFrame(
        {
            "uri": ["at://did:plc:agent/app.bsky.feed.post/r1", "at://did:plc:agent/app.bsky.feed.post/r2"],
            "reply_parent_uri": [elsewhere, nowhere],
            "reply_root_uri": [elsewhere, nowhere],
        }
    )
    quick = RetryPolicy(attempts=2, base_delay_s=0.01)  # a refused connection is retried, then given up on
    with ResilientHttp(policy=quick) as http:
        resolver = IdentityResolver(http, devnet.plc_url, cache_path=cache)
        fetcher = AncestorFetcher(http, None, resolver, PostCache(tmp_path / "posts.jsonl"), log=lambda _: None)
        threads = build_thread_context(replies, {}, fetcher)

    reasons = dict(zip(threads["uri"], threads["missing_reason"], strict=True))
    assert reasons == {
        "at://did:plc:agent/app.bsky.feed.post/r1": "not_found",
        "at://did:plc:agent/app.bsky.feed.post/r2": "pds_unreachable",
    }
    for row in threads.iter_rows(named=True):  # the ancestor stays in the chain, marked, instead of vanishing
        assert [(a["uri"], a["available"]) for a in row["ancestors"]] == [(row["parent_uri"], False)]
        assert row["complete"] is False
    assert fetcher.stats.unavailable == {"not_found": 1, "pds_unreachable": 1}
    assert http.stats.retries >= 1, "the unreachable PDS was retried before it was given up on"


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, "AuthRequired"), (403, "Forbidden"), (400, "BlockedActor"), (400, "BlockedByActor")],
)
def test_an_answer_that_refuses_us_the_record_is_blocked(status: int, error: str) -> None:
    # a PDS that wants credentials, or a block between the accounts: the record exists, we may not read it
    assert reason_for(XrpcError("com.atproto.repo.getRecord", status, error, "")) == "blocked"


def test_a_record_not_found_is_deleted_and_an_unknown_refusal_is_not_found() -> None:
    assert reason_for(XrpcError("com.atproto.repo.getRecord", 400, "RecordNotFound", "")) == "deleted"
    assert reason_for(XrpcError("com.atproto.repo.getRecord", 400, "InvalidRequest", "Could not find repo")) == (
        "not_found"
    )
