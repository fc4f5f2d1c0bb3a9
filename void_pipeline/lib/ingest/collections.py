"""The collections the pipeline reads and what makes a collection name valid — without polars, so the settings
(and the serve entry point, in the vLLM image) can check ``VOID_COLLECTIONS``."""

from __future__ import annotations

import re

POST = "app.bsky.feed.post"
REASONING = "stream.thought.reasoning"
MEMORY = "stream.thought.memory"
TOOL_CALL = "stream.thought.tool.call"
TEXT_FIELD = {POST: "text", REASONING: "reasoning", MEMORY: "content", TOOL_CALL: "tool_name"}
DEFAULT_COLLECTIONS = tuple(TEXT_FIELD)
MAX_POST_GRAPHEMES = 300  # app.bsky.feed.post lexicon: maxGraphemes 300, maxLength 3000 (bytes)
MAX_POST_BYTES = 3000
MAX_RECORD_BYTES = 1_000_000  # anything bigger is not a record we can train on

# A collection is an NSID (atproto.com/specs/nsid): a reversed domain, then a name of letters and digits.
# Validated before it names a file or a partition: path characters never reach the file system.
NSID = re.compile(
    r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+\.[a-zA-Z][a-zA-Z0-9]{0,62}$"
)
MAX_NSID_LENGTH = 317


def collection_error(name: str) -> str | None:
    """Why ``name`` is not a valid collection NSID, or None when it is."""
    if len(name) <= MAX_NSID_LENGTH and NSID.match(name):
        return None
    return f"{name!r} is not a valid collection NSID (dot-separated, like app.bsky.feed.post or stream.thought.memory)"


def require_collection(name: str) -> str:
    error = collection_error(name)
    if error:
        raise ValueError(error)
    return name
