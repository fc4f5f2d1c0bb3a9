"""Raw records → one validated, normalised row each, or a quarantine entry with the reason.

Every collection's main text lands in ``text``: ``app.bsky.feed.post`` → ``text``, ``stream.thought.reasoning`` →
``reasoning``, ``stream.thought.memory`` → ``content``, ``stream.thought.tool.call`` → ``tool_name`` (with its
arguments as JSON in ``tool_args``). Nothing is dropped silently: ``inputs == kept + quarantined``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from void_pipeline.lib.curate.reply_tool import grapheme_count
from void_pipeline.lib.ingest.collections import (  # re-exported: where callers have looked for them
    DEFAULT_COLLECTIONS as DEFAULT_COLLECTIONS,
)
from void_pipeline.lib.ingest.collections import (
    MAX_NSID_LENGTH as MAX_NSID_LENGTH,
)
from void_pipeline.lib.ingest.collections import (
    MAX_POST_BYTES as MAX_POST_BYTES,
)
from void_pipeline.lib.ingest.collections import (
    MAX_POST_GRAPHEMES as MAX_POST_GRAPHEMES,
)
from void_pipeline.lib.ingest.collections import (
    MAX_RECORD_BYTES as MAX_RECORD_BYTES,
)
from void_pipeline.lib.ingest.collections import (
    MEMORY as MEMORY,
)
from void_pipeline.lib.ingest.collections import (
    NSID as NSID,
)
from void_pipeline.lib.ingest.collections import (
    POST as POST,
)
from void_pipeline.lib.ingest.collections import (
    REASONING as REASONING,
)
from void_pipeline.lib.ingest.collections import (
    TEXT_FIELD as TEXT_FIELD,
)
from void_pipeline.lib.ingest.collections import (
    TOOL_CALL as TOOL_CALL,
)
from void_pipeline.lib.ingest.collections import (
    collection_error as collection_error,
)
from void_pipeline.lib.ingest.collections import (
    require_collection as require_collection,
)
from void_pipeline.lib.ingest.repo_car import to_json_value

RAW_SCHEMA: dict[str, pl.DataType] = {
    "uri": pl.String(),
    "cid": pl.String(),
    "did": pl.String(),
    "collection": pl.String(),
    "rkey": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "text": pl.String(),
    "reply_parent_uri": pl.String(),
    "reply_parent_cid": pl.String(),
    "reply_root_uri": pl.String(),
    "reply_root_cid": pl.String(),
    "langs": pl.List(pl.String()),
    "embed_type": pl.String(),
    "embed_uri": pl.String(),
    "facet_count": pl.Int32(),
    "mention_dids": pl.List(pl.String()),
    "link_uris": pl.List(pl.String()),
    "tool_args": pl.String(),
    "raw_json": pl.String(),
}
# What each column holds, for the UI's schema view and anyone reading the parquet.
COLUMN_DOCS: dict[str, str] = {
    "uri": "at:// URI of the record (the table's key)",
    "cid": "content hash of the record's current version",
    "did": "DID of the repo the record is in (the agent)",
    "collection": "the record's collection NSID (the partition)",
    "rkey": "record key within the collection (a TID for posts)",
    "created_at": "the record's createdAt, parsed to UTC",
    "text": "the post's text, or the thought's text/content",
    "reply_parent_uri": "for a reply: the post it answers",
    "reply_parent_cid": "for a reply: the version of the post it answers",
    "reply_root_uri": "for a reply: the thread's first post",
    "reply_root_cid": "for a reply: the version of the thread's first post",
    "langs": "languages the author declared",
    "embed_type": "the embed's $type (images, a quote, an external link), if any",
    "embed_uri": "what the embed points at (a quoted post, a link)",
    "facet_count": "number of rich-text facets (mentions, links, tags)",
    "mention_dids": "DIDs mentioned in the text",
    "link_uris": "links in the text",
    "tool_args": "for tool-call thoughts: the call's arguments as JSON",
    "raw_json": "the record exactly as the PDS served it (JSON)",
    "text_norm": "the text normalised for duplicate detection (lower case, no mentions or links, collapsed space)",
    "orphan": "a reply whose thread could not be fetched (kept, flagged)",
    "parent_uri": "the post the reply answers",
    "root_uri": "the thread's first post",
    "depth": "ancestors above the reply (1: it answers the root)",
    "complete": "every ancestor up to the root was fetched",
    "missing_reason": "why the chain stops short (deleted, taken down, blocked), when it does",
    "ancestors": "the chain from the root down to the post answered: author, text, record, where it came from",
    "reason": "why the record was quarantined",
    "detail": "what exactly was wrong with it",
}
REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "uri": pl.String(),
    "cid": pl.String(),
    "collection": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "raw_json": pl.String(),
}


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


def parse_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def is_at_uri(value: Any, collection: str | None = None) -> bool:
    if not isinstance(value, str) or not value.startswith("at://"):
        return False
    parts = value.removeprefix("at://").split("/")
    return len(parts) == 3 and all(parts) and (collection is None or parts[1] == collection)


def strong_ref(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and is_at_uri(value.get("uri")) and isinstance(value.get("cid"), str):
        return str(value["uri"]), str(value["cid"])
    return None


def normalise_record(did: str, collection: str, rkey: str, cid: str, value: Any) -> dict[str, Any] | Rejection:
    """One raw record → a row of RAW_SCHEMA, or the reason it is quarantined."""
    if not isinstance(value, dict):
        return Rejection("not_a_map", f"record is a {type(value).__name__}")
    record_type = value.get("$type")
    if record_type is None:
        return Rejection("missing_type", "no $type")
    if record_type != collection:
        return Rejection("unknown_type", f"$type {record_type!r} in collection {collection}")
    created_at = parse_datetime(value.get("createdAt"))
    if created_at is None:
        return Rejection("bad_created_at", f"createdAt {value.get('createdAt')!r} is not an ISO datetime with zone")
    text_field = TEXT_FIELD.get(collection)
    text = (
        value.get(text_field)
        if text_field
        else next((value[f] for f in ("text", "content", "reasoning") if isinstance(value.get(f), str)), None)
    )
    if text_field is not None and text_field not in value:
        return Rejection("missing_field", f"no {text_field!r}")
    if text_field is not None and not isinstance(text, str):
        return Rejection("wrong_type", f"{text_field!r} is a {type(text).__name__}, not a string")
    raw_json = json.dumps(to_json_value(value), ensure_ascii=False, sort_keys=True)
    if len(raw_json.encode()) > MAX_RECORD_BYTES:
        return Rejection("oversized_record", f"{len(raw_json.encode()):,} bytes")

    row: dict[str, Any] = {
        "uri": f"at://{did}/{collection}/{rkey}",
        "cid": cid,
        "did": did,
        "collection": collection,
        "rkey": rkey,
        "created_at": created_at,
        "text": text,
        "reply_parent_uri": None,
        "reply_parent_cid": None,
        "reply_root_uri": None,
        "reply_root_cid": None,
        "langs": None,
        "embed_type": None,
        "embed_uri": None,
        "facet_count": 0,
        "mention_dids": [],
        "link_uris": [],
        "tool_args": None,
        "raw_json": raw_json,
    }
    if collection == POST:
        problem = _post_fields(value, row)
        if problem is not None:
            return problem
    if collection == TOOL_CALL:
        args = value.get("arguments", value.get("args"))
        row["tool_args"] = (
            json.dumps(to_json_value(args), ensure_ascii=False, sort_keys=True) if args is not None else None
        )
    return row


def _post_fields(value: dict[str, Any], row: dict[str, Any]) -> Rejection | None:
    text = row["text"]
    if len(text.encode()) > MAX_POST_BYTES or grapheme_count(text) > MAX_POST_GRAPHEMES:
        return Rejection("oversized_text", f"{grapheme_count(text)} graphemes, {len(text.encode())} bytes")
    reply = value.get("reply")
    if reply is not None:
        parent = strong_ref(reply.get("parent")) if isinstance(reply, dict) else None
        root = strong_ref(reply.get("root")) if isinstance(reply, dict) else None
        if parent is None or root is None:
            return Rejection("broken_reply_ref", "reply needs parent and root strong refs (at:// uri + cid)")
        row["reply_parent_uri"], row["reply_parent_cid"] = parent
        row["reply_root_uri"], row["reply_root_cid"] = root
    langs = value.get("langs")
    if langs is not None:
        if not isinstance(langs, list) or not all(isinstance(lang, str) for lang in langs):
            return Rejection("wrong_type", "'langs' must be a list of strings")
        row["langs"] = langs
    embed = value.get("embed")
    if isinstance(embed, dict):
        row["embed_type"] = embed.get("$type")
        inner = embed.get("record")
        if isinstance(inner, dict):
            ref = strong_ref(inner) or strong_ref(inner.get("record"))
            row["embed_uri"] = ref[0] if ref else None
    facets = value.get("facets")
    if isinstance(facets, list):
        row["facet_count"] = len(facets)
        for facet in facets:
            for feature in facet.get("features", []) if isinstance(facet, dict) else []:
                if not isinstance(feature, dict):
                    continue
                if feature.get("$type") == "app.bsky.richtext.facet#mention" and isinstance(feature.get("did"), str):
                    row["mention_dids"].append(feature["did"])
                elif feature.get("$type") == "app.bsky.richtext.facet#link" and isinstance(feature.get("uri"), str):
                    row["link_uris"].append(feature["uri"])
    return None


def rejected_row(uri: str, cid: str, collection: str, rejection: Rejection, value: Any) -> dict[str, Any]:
    try:
        raw = json.dumps(to_json_value(value), ensure_ascii=False, sort_keys=True)[:MAX_RECORD_BYTES]
    except (TypeError, ValueError):
        raw = repr(value)[:MAX_RECORD_BYTES]
    return {
        "uri": uri,
        "cid": cid,
        "collection": collection,
        "reason": rejection.reason,
        "detail": rejection.detail,
        "raw_json": raw,
    }


def rows_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RAW_SCHEMA) if rows else pl.DataFrame(schema=RAW_SCHEMA)


def rejected_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=REJECTED_SCHEMA) if rows else pl.DataFrame(schema=REJECTED_SCHEMA)
