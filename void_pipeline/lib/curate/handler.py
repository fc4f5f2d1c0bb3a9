"""The thread as void's handler shows it to the model: the handler profile of the prompt renderer.

Matched: letta-ai/example-social-agent, ``bsky.py`` at e7a2a05 (``process_mention``: ``getPostThread`` with
``parent_height`` 40, the prompt's variables) and ``bsky_utils.py`` at 652ffad (``thread_to_yaml_string``). What
that handler does, and what this module does the same way with its own code:

- the thread is the mention and its parents, root first (no replies below it); a parent the AppView cannot show
  (not found, blocked) ends the chain there, and at most 40 parents are shown;
- each post is an ``app.bsky.feed.defs#postView`` parsed into the ``atproto`` SDK's models, turned into plain data
  by the models' attributes (snake_case names), then pruned: the fields in ``HANDLER_STRIPS`` and pydantic
  internals go at every depth, and so does every value left empty (None, ``{}``, ``[]``, blank text) — except
  items of a list, where only None is dropped;
- ``yaml.dump`` with ``indent=2``, ``allow_unicode=True``, ``default_flow_style=False`` (keys sorted, PyYAML's
  default) of ``{"posts": [...]}``: the prompt's ``thread_context`` (with its final newline);
- ``author_name`` is the mention author's display name, or the handle when there is none.

Training posts come from thread context (text, facets, embeds as the record holds them, author handle and display
name); the hydrated ``embed`` view and counts the AppView adds at serving time are not in the history, and the
handler strips the counts anyway.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import yaml
from atproto_client import models
from atproto_client.models.utils import get_or_create

from void_pipeline.lib.curate.handler_yaml import Unsure, list_item, scalar


class ThreadPost(NamedTuple):
    """One post of a thread as thread context keeps it (a named tuple: a dataset builds tens of thousands)."""

    uri: str
    author_handle: str | None
    author_did: str | None
    text: str | None
    created_at: str | None
    available: bool = True
    reason: str | None = None
    display_name: str | None = None
    cid: str | None = None
    record_json: str | None = None  # the record as its repo holds it (facets, embeds), when known


HANDLER_VERSION = "letta-ai/example-social-agent bsky.py@e7a2a05, bsky_utils.py@652ffad"
PARENT_HEIGHT = 40  # getPostThread's parent_height in the handler
# The fields the handler removes from every level of a post (its STRIP_FIELDS), as a set of names.
HANDLER_STRIPS = frozenset(
    [
        "cid",
        "rev",
        "uri",
        "langs",
        "threadgate",
        "py_type",
        "labels",
        "avatar",
        "viewer",
        "indexed_at",
        "tags",
        "associated",
        "thread_context",
        "aspect_ratio",
        "thumb",
        "fullsize",
        "root",
        "created_at",
        "verification",
        "like_count",
        "quote_count",
        "reply_count",
        "repost_count",
        "embedding_disabled",
        "thread_muted",
        "reply_disabled",
        "pinned",
        "like",
        "repost",
        "blocked_by",
        "blocking",
        "blocking_by_list",
        "followed_by",
        "following",
        "known_followers",
        "muted",
        "muted_by_list",
        "root_author_like",
        "entities",
        "ref",
        "mime_type",
        "size",
    ]
)


def visible_thread(thread: Sequence[ThreadPost]) -> list[ThreadPost]:
    """What ``getPostThread(parent_height=40)`` lets the handler see of ``thread`` (root first, the mention last):
    the posts after the last one that cannot be shown, at most 40 parents."""
    start = max(0, len(thread) - PARENT_HEIGHT - 1)
    for i in range(len(thread) - 1, start - 1, -1):
        if not thread[i].available:
            start = i + 1
            break
    return list(thread[start:])


def post_view(post: ThreadPost) -> models.AppBskyFeedDefs.PostView:
    """The post as the AppView would describe it, parsed by the SDK as the handler's client parses it."""
    record: dict[str, Any] = json.loads(post.record_json) if post.record_json else {}
    record.setdefault("$type", "app.bsky.feed.post")
    record.setdefault("text", post.text or "")
    record.setdefault("createdAt", post.created_at or "")
    author: dict[str, Any] = {"did": post.author_did or "", "handle": post.author_handle or "handle.invalid"}
    if post.display_name:
        author["displayName"] = post.display_name
    view = {
        "uri": post.uri,
        "cid": post.cid or "",
        "author": author,
        "record": record,
        "indexedAt": post.created_at or "",
    }
    parsed: models.AppBskyFeedDefs.PostView = get_or_create(view, models.AppBskyFeedDefs.PostView)
    return parsed


def plain(value: Any) -> Any:
    """SDK models as nested dicts of their attributes; lists and dicts walked; other non-basic values as text."""
    if hasattr(value, "__dict__"):  # the SDK's pydantic models: their fields by attribute name
        return plain(vars(value))
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or (isinstance(value, str) and not value.strip())


def pruned(value: Any) -> Any:
    """Without the handler's stripped fields and pydantic internals, and without what that leaves empty."""
    if isinstance(value, dict):
        kept = {k: pruned(v) for k, v in value.items() if k not in HANDLER_STRIPS and not k.startswith("__")}
        return {k: v for k, v in kept.items() if not _empty(v)}
    if isinstance(value, list):
        return [item for item in (pruned(v) for v in value) if item is not None]
    return value


# Record keys whose values the handler strips whole (or, for reply, down to nothing): a record with no other key
# becomes just its text, so such posts skip the SDK (a test holds both ways equal).
TEXT_ONLY_RECORD_KEYS = frozenset({"$type", "text", "createdAt", "langs", "reply", "tags", "labels"})


NOT_TEXT_ONLY = object()


def _text_only(post: ThreadPost) -> Any:
    """The text the handler shows when it would show ``post`` as just its author and text, else NOT_TEXT_ONLY."""
    if not (post.author_did and post.author_handle):
        return NOT_TEXT_ONLY
    if not post.record_json:
        return post.text
    record = json.loads(post.record_json)
    return record.get("text", post.text) if set(record) <= TEXT_ONLY_RECORD_KEYS else NOT_TEXT_ONLY


def post_data(post: ThreadPost) -> Any:
    """The post as plain data, pruned as the handler prunes it."""
    text = _text_only(post)
    if text is not NOT_TEXT_ONLY:
        author = {"did": post.author_did, "display_name": post.display_name, "handle": post.author_handle}
        return pruned({"author": author, "record": {"text": text}})
    return pruned(plain(post_view(post)))


@functools.lru_cache(maxsize=65_536)
def _author_item(did: str, display_name: str | None, handle: str) -> str | None:
    """The ``- author:`` lines of a post's item: authors recur across thousands of posts."""
    author = pruned({"did": did, "display_name": display_name, "handle": handle})
    return list_item({"author": author}) if author else None


def post_item(post: ThreadPost) -> str:
    """One post's YAML list item: ``yaml.dump([post_data(post)], ...)``, the common shapes written directly."""
    text = _text_only(post)
    if isinstance(text, str):
        author_part = _author_item(post.author_did or "", post.display_name, post.author_handle or "")
        if author_part is not None:
            if not text.strip():
                return author_part
            try:  # what list_item writes for {"record": {"text": text}}, continuing the item (author < record)
                return f"{author_part}  record:\n    text: {scalar(text, 9, 6)}\n"
            except Unsure:
                pass
    data = post_data(post)
    written = list_item(data)  # the common shapes, written directly; PyYAML for the rest (same bytes)
    if written is not None:
        return written
    dumped: str = yaml.dump([data], indent=2, allow_unicode=True, default_flow_style=False)
    return dumped


def thread_yaml(thread: Sequence[ThreadPost], items: Mapping[str, str] | None = None) -> str:
    """``yaml.dump({"posts": [...]})`` of the visible thread, from per-post items (PyYAML writes a mapping's block
    sequence without indenting it, so the items are the same text either way; a test holds both equal).
    ``items``: posts' items already written, by URI (a dataset writes each post once for all its threads)."""
    posts = visible_thread(thread)
    if not posts:
        return "posts: []\n"
    if items is None:
        return "posts:\n" + "".join(post_item(post) for post in posts)
    return "posts:\n" + "".join(items[post.uri] for post in posts)


def tree_view(thread: Sequence[ThreadPost]) -> str:
    """An indented tree of the visible thread, root first (our own drawing, for templates that show one)."""
    lines = []
    for depth, post in enumerate(visible_thread(thread)):
        name = f"@{post.author_handle}" if post.author_handle else (post.author_did or "unknown")
        if post.display_name:
            name += f" ({post.display_name})"
        lines.append(f"{'  ' * depth}└─ {name}: {' '.join((post.text or '').split())}")
    return "\n".join(lines)


def thread_from_response(response: dict[str, Any]) -> list[ThreadPost]:
    """A ``app.bsky.feed.getPostThread`` response as the thread to render, root first, the requested post last.
    Checked against the SDK's models; a parent that cannot be shown (not found, blocked) stays as an unavailable
    post and ends the chain, as it does for the handler. ValueError for anything else."""
    try:
        get_or_create(response, models.AppBskyFeedGetPostThread.Response)
    except Exception as err:  # the SDK raises pydantic's and its own errors: one clear message
        raise ValueError(f"not a getPostThread response: {str(err).splitlines()[0]}") from err
    node: Any = response.get("thread")
    chain: list[ThreadPost] = []
    while isinstance(node, dict):
        kind = str(node.get("$type", ""))
        view = node.get("post")
        if not kind.endswith("#threadViewPost") or not isinstance(view, dict):
            chain.append(ThreadPost(str(node.get("uri", "")), None, None, None, None, False, thread_gap(kind)))
            break
        record: dict[str, Any] = view["record"] if isinstance(view.get("record"), dict) else {}
        author = view.get("author") or {}
        chain.append(
            ThreadPost(
                uri=str(view.get("uri")),
                author_handle=author.get("handle"),
                author_did=author.get("did"),
                text=record.get("text"),
                created_at=record.get("createdAt"),
                display_name=author.get("displayName"),
                cid=view.get("cid"),
                record_json=json.dumps(record, ensure_ascii=False, sort_keys=True),
            )
        )
        node = node.get("parent")
    if not chain or not chain[0].available:
        raise ValueError("the thread's post itself is not found or blocked: nothing to answer")
    return chain[::-1]


def thread_gap(kind: str) -> str:
    return "blocked" if kind.endswith("#blockedPost") else "not_found"
