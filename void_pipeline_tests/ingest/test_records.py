"""Record validation and normalisation: each way a record can be wrong has its own reason."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from void_pipeline.lib.curate.reply_tool import grapheme_count
from void_pipeline.lib.ingest.identity import IdentityError, parse_did_document
from void_pipeline.lib.ingest.records import POST, Rejection, normalise_record
from void_pipeline.lib.ingest.resilience import TokenBucket, rate_limit_wait
from void_pipeline.lib.ingest.xrpc import XrpcError, raise_for_xrpc

DID = "did:plc:abc"
GOOD = {"$type": POST, "text": "hello", "createdAt": "2025-05-01T10:00:00.000Z"}


def norm(value: Any, collection: str = POST) -> dict[str, Any] | Rejection:
    return normalise_record(DID, collection, "3kabc", "bafycid", value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("just a string", "not_a_map"),
        ({"text": "x", "createdAt": "2025-05-01T10:00:00Z"}, "missing_type"),
        ({**GOOD, "$type": "app.bsky.feed.like"}, "unknown_type"),
        ({**GOOD, "createdAt": "2025-05-01 10:00"}, "bad_created_at"),
        ({"$type": POST, "createdAt": GOOD["createdAt"]}, "missing_field"),
        ({**GOOD, "text": ["x"]}, "wrong_type"),
        ({**GOOD, "text": "y" * 301}, "oversized_text"),
        ({**GOOD, "text": "é" * 1600}, "oversized_text"),  # 1600 graphemes, 3200 bytes
        ({**GOOD, "reply": {"parent": {"uri": "at://did:plc:x/app.bsky.feed.post/1", "cid": "b"}}}, "broken_reply_ref"),
        ({**GOOD, "langs": "en"}, "wrong_type"),
    ],
)
def test_each_defect_is_quarantined_with_its_reason(value: Any, reason: str) -> None:
    outcome = norm(value)
    assert isinstance(outcome, Rejection) and outcome.reason == reason and outcome.detail


def test_a_good_reply_is_normalised() -> None:
    parent = {"uri": "at://did:plc:x/app.bsky.feed.post/3kp", "cid": "bafyp"}
    root = {"uri": "at://did:plc:x/app.bsky.feed.post/3kr", "cid": "bafyr"}
    mention = {"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:x"}
    row = norm(
        {
            **GOOD,
            "reply": {"parent": parent, "root": root},
            "langs": ["en"],
            "facets": [{"index": {"byteStart": 0, "byteEnd": 2}, "features": [mention]}],
            "embed": {"$type": "app.bsky.embed.record", "record": parent},
        }
    )
    assert isinstance(row, dict)
    assert (row["reply_parent_uri"], row["reply_root_cid"]) == (parent["uri"], "bafyr")
    assert row["uri"] == f"at://{DID}/{POST}/3kabc" and row["langs"] == ["en"]
    assert row["mention_dids"] == ["did:plc:x"] and row["embed_uri"] == parent["uri"]


@pytest.mark.parametrize(
    ("collection", "value", "text"),
    [
        ("stream.thought.reasoning", {"reasoning": "because"}, "because"),
        ("stream.thought.memory", {"content": "remember"}, "remember"),
        ("stream.thought.tool.call", {"tool_name": "search", "arguments": {"q": "x"}}, "search"),
    ],
)
def test_cognition_text_lands_in_one_column(collection: str, value: dict[str, Any], text: str) -> None:
    row = norm({"$type": collection, "createdAt": "2025-05-01T10:00:00Z", **value}, collection)
    assert isinstance(row, dict) and row["text"] == text
    if collection.endswith("tool.call"):
        assert row["tool_args"] == '{"q": "x"}'


def test_emoji_sequences_count_as_one_grapheme() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl
    thumbs = "\U0001f44d\U0001f3fd"  # thumbs up, skin tone
    assert grapheme_count(family) == 1 and grapheme_count(thumbs) == 1 and grapheme_count("e\u0301") == 1
    # 300 graphemes of 2 code points each (600 code points, 2400 bytes): a valid post
    assert isinstance(norm({**GOOD, "text": thumbs * 300}), dict)
    # 300 graphemes, but 5400 bytes: over the lexicon's 3000-byte limit
    too_big = norm({**GOOD, "text": family * 300})
    assert isinstance(too_big, Rejection) and too_big.reason == "oversized_text"


def test_error_bodies_that_are_not_json_still_give_a_clear_error() -> None:
    html = httpx.Response(502, text="<html>Bad Gateway</html>", request=httpx.Request("GET", "http://x/xrpc/m"))
    with pytest.raises(XrpcError, match="HTTP 502 Bad Gateway: <html>"):
        raise_for_xrpc("m", html)
    xrpc = httpx.Response(400, json={"error": "InvalidRequest", "message": "nope"}, request=html.request)
    with pytest.raises(XrpcError) as err:
        raise_for_xrpc("m", xrpc)
    assert (err.value.error, err.value.message) == ("InvalidRequest", "nope")


def test_rate_limit_headers_are_read() -> None:
    assert rate_limit_wait(httpx.Headers({"retry-after": "7"})) == 7
    assert rate_limit_wait(httpx.Headers({"ratelimit-reset": "1000.5"}), now=990.0) == pytest.approx(10.5)
    assert rate_limit_wait(httpx.Headers({"ratelimit-reset": "900"}), now=990.0) == 0
    assert rate_limit_wait(httpx.Headers({}), default_s=3) == 3


def test_token_bucket_spaces_requests_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=50, capacity=5)
    waits = [bucket.acquire() for _ in range(10)]
    assert sum(waits[:5]) == 0 and sum(waits[5:]) > 0.05  # 5 free, then 1/50 s each
    with pytest.raises(ValueError):
        TokenBucket(rate=0, capacity=1)


def test_did_documents_are_checked() -> None:
    doc = {
        "id": DID,
        "alsoKnownAs": ["at://void.example"],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds/"}],
    }
    identity = parse_did_document(DID, doc)
    assert (identity.handle, identity.pds_url) == ("void.example", "https://pds")
    with pytest.raises(IdentityError, match="another subject"):
        parse_did_document("did:plc:other", doc)
    with pytest.raises(IdentityError, match="no #atproto_pds"):
        parse_did_document(DID, {**doc, "service": []})
