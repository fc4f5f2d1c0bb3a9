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
name). The post-level ``embed`` view (images with alt, link cards, videos, quoted posts) is the one the AppView sent
(``embed_json``: getPostThread at serving, getPosts at ingestion) or, where none was kept, rebuilt from the record
(lib/ingest/embed_views.py). Counts the AppView adds are not in the history; the handler strips them anyway.

The models' field set is atproto 0.0.61's (the handler's pin; NEWER_SDK_FIELDS are left out). Profiles
(``handler_profile``): ``example-social-agent@e7a2a05`` (this module, the default) and the newer layout of the fork
asa-degroff/umbra@cae8c07 (lib/curate/handler_umbra.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import yaml
from atproto_client import models
from atproto_client.models.utils import get_or_create

from void_pipeline.lib.curate.handler_yaml import Unsure, list_item, scalar
from void_pipeline.lib.curate.request import DEFAULT_HANDLER
from void_pipeline.lib.ingest.embed_views import BLOCKED, Quoted, Resolver, embed_view


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
    embed_json: str | None = None  # the AppView's post-level ``embed`` view, when the post came from an AppView


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


def quoted_posts(posts: Mapping[str, ThreadPost]) -> Resolver:
    """A resolver for quoted posts from posts known by URI (an unknown or unavailable post is not found)."""

    def resolve(uri: str) -> Quoted | str | None:
        post = posts.get(uri)
        if post is None or not post.available or not post.author_did:
            return BLOCKED if post is not None and post.reason == "blocked" else None
        record = json.loads(post.record_json) if post.record_json else {"text": post.text or ""}
        record.setdefault("$type", "app.bsky.feed.post")
        record.setdefault("createdAt", post.created_at or "")
        return Quoted(post.uri, post.cid or "", post.author_did, post.author_handle or "handle.invalid",
                      post.display_name, record, post.created_at or "")  # fmt: skip

    return resolve


def post_view(post: ThreadPost, quoted: Resolver | None = None) -> models.AppBskyFeedDefs.PostView:
    """The post as the AppView would describe it, parsed by the SDK as the handler's client parses it: its
    ``embed`` view as the AppView sent it (``embed_json``), else rebuilt from the record (lib/ingest/embed_views.py;
    ``quoted`` finds quoted posts, which otherwise show as not found)."""
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
    embed = (
        json.loads(post.embed_json)
        if post.embed_json
        else embed_view(record.get("embed"), post.author_did or "", quoted)
    )
    if embed is not None:
        view["embed"] = embed
    parsed: models.AppBskyFeedDefs.PostView = get_or_create(view, models.AppBskyFeedDefs.PostView)
    return parsed


# The attributes the orchestrator's atproto models (0.0.73, envs/orchestrator.txt) have and the handlers' pinned
# atproto 0.0.61 (both handlers' requirements.txt) lacks, for the models a thread holds. Version 0.0.61 keeps what
# the AppView sends for them as pydantic extras, outside the attributes, so the handlers never show them.
NEWER_SDK_FIELDS: dict[type, frozenset[str]] = {
    models.AppBskyFeedDefs.PostView: frozenset({"bookmark_count", "debug"}),
    models.AppBskyFeedDefs.ViewerState: frozenset({"bookmarked", "known_likers"}),
    models.AppBskyActorDefs.ProfileViewBasic: frozenset({"debug", "pronouns", "status"}),
    models.AppBskyActorDefs.ProfileAssociated: frozenset({"activity_subscription", "germ"}),
    models.AppBskyActorDefs.VerificationView: frozenset({"issuer_display_name", "issuer_handle"}),
    models.AppBskyEmbedExternal.External: frozenset({"associated_refs"}),
    models.AppBskyEmbedExternal.ViewExternal: frozenset(
        {"associated_profiles", "associated_refs", "created_at", "labels", "reading_time", "source", "updated_at"}
    ),
    models.AppBskyEmbedRecord.ViewRecord: frozenset({"op_thread_post_count", "op_thread_post_index"}),
    models.AppBskyEmbedVideo.Main: frozenset({"presentation"}),
    models.AppBskyEmbedVideo.View: frozenset({"presentation"}),
}


def plain(value: Any) -> Any:
    """SDK models as nested dicts of their attributes (atproto 0.0.61's field set: NEWER_SDK_FIELDS left out);
    lists and dicts walked; other non-basic values as text."""
    if hasattr(value, "__dict__"):  # the SDK's pydantic models: their fields by attribute name
        newer = NEWER_SDK_FIELDS.get(type(value))
        fields = vars(value)
        return plain({k: v for k, v in fields.items() if k not in newer} if newer else fields)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or (isinstance(value, str) and not value.strip())


def pruned(value: Any, strips: frozenset[str] = HANDLER_STRIPS) -> Any:
    """Without the handler's stripped fields and pydantic internals, and without what that leaves empty."""
    if isinstance(value, dict):
        kept = {k: pruned(v, strips) for k, v in value.items() if k not in strips and not k.startswith("__")}
        return {k: v for k, v in kept.items() if not _empty(v)}
    if isinstance(value, list):
        return [item for item in (pruned(v, strips) for v in value) if item is not None]
    return value


# Record keys whose values the handler strips whole (or, for reply, down to nothing): a record with no other key
# becomes just its text, so such posts skip the SDK (a test holds both ways equal).
TEXT_ONLY_RECORD_KEYS = frozenset({"$type", "text", "createdAt", "langs", "reply", "tags", "labels"})


NOT_TEXT_ONLY = object()


def _text_only(post: ThreadPost) -> Any:
    """The text the handler shows when it would show ``post`` as just its author and text, else NOT_TEXT_ONLY."""
    if not (post.author_did and post.author_handle) or post.embed_json:
        return NOT_TEXT_ONLY
    if not post.record_json:
        return post.text
    record = json.loads(post.record_json)
    return record.get("text", post.text) if set(record) <= TEXT_ONLY_RECORD_KEYS else NOT_TEXT_ONLY


def post_data(post: ThreadPost, quoted: Resolver | None = None) -> Any:
    """The post as plain data, pruned as the handler prunes it."""
    text = _text_only(post)
    if text is not NOT_TEXT_ONLY:
        author = {"did": post.author_did, "display_name": post.display_name, "handle": post.author_handle}
        return pruned({"author": author, "record": {"text": text}})
    return pruned(plain(post_view(post, quoted)))


@functools.lru_cache(maxsize=65_536)
def _author_item(did: str, display_name: str | None, handle: str) -> str | None:
    """The ``- author:`` lines of a post's item: authors recur across thousands of posts."""
    author = pruned({"did": did, "display_name": display_name, "handle": handle})
    return list_item({"author": author}) if author else None


def post_item(post: ThreadPost, quoted: Resolver | None = None, profile: str | None = None) -> str:
    """One post's YAML list item: ``yaml.dump([post_data(post)], ...)``, the common shapes written directly.
    ``quoted`` finds quoted posts (quoted_posts); ``profile``: a name in PROFILES (None: the default)."""
    if profile is not None and profile != DEFAULT_PROFILE:
        return handler_profile(profile).item(post, quoted)
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
    data = post_data(post, quoted)
    written = list_item(data)  # the common shapes, written directly; PyYAML for the rest (same bytes)
    if written is not None:
        return written
    dumped: str = yaml.dump([data], indent=2, allow_unicode=True, default_flow_style=False)
    return dumped


def posts_text(posts: Sequence[ThreadPost], items: Sequence[str]) -> str:
    """``yaml.dump({"posts": [...]})`` from the posts' items (PyYAML writes a mapping's block sequence without
    indenting it, so the items are the same text either way; a test holds both equal)."""
    return "posts:\n" + "".join(items) if items else "posts: []\n"


class HandlerProfile(NamedTuple):
    """How one handler version shows a thread: each post's YAML item, and the thread's text from the visible
    posts and their items."""

    name: str
    matches: str  # the handler source it follows
    sdk: str  # the atproto SDK whose models' field set its YAML shows
    item: Callable[[ThreadPost, Resolver | None], str]
    text: Callable[[Sequence[ThreadPost], Sequence[str]], str]


DEFAULT_PROFILE = DEFAULT_HANDLER


def handler_profile(name: str | None = None) -> HandlerProfile:
    """A handler profile by name (PROFILES; None: the default). ValueError naming the known ones."""
    from void_pipeline.lib.curate.handler_umbra import UMBRA_PROFILES  # it builds on this module

    profiles: dict[str, HandlerProfile] = {DEFAULT_PROFILE: DEFAULT, **UMBRA_PROFILES}
    found = profiles.get(name or DEFAULT_PROFILE)
    if found is None:
        raise ValueError(f"unknown handler profile {name!r} (known: {', '.join(profiles)})")
    return found


def thread_yaml(
    thread: Sequence[ThreadPost],
    items: Mapping[str, str] | None = None,
    profile: str | None = None,
    quoted: Resolver | None = None,
) -> str:
    """The visible thread as the handler's ``thread_to_yaml_string`` writes it: for the default profile
    ``yaml.dump({"posts": [...]})``. ``items``: posts' items already written with the same profile, by URI (a
    dataset writes each post once for all its threads); ``quoted`` finds quoted posts."""
    posts = visible_thread(thread)
    if profile is None or profile == DEFAULT_PROFILE:
        if items is None:
            return posts_text(posts, [post_item(post, quoted) for post in posts])
        return posts_text(posts, [items[post.uri] for post in posts])
    chosen = handler_profile(profile)
    written = [items[p.uri] for p in posts] if items is not None else [chosen.item(p, quoted) for p in posts]
    return chosen.text(posts, written)


DEFAULT = HandlerProfile(DEFAULT_PROFILE, HANDLER_VERSION, "atproto 0.0.61", post_item, posts_text)


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
                embed_json=json.dumps(view["embed"], ensure_ascii=False, sort_keys=True)
                if isinstance(view.get("embed"), dict)
                else None,
            )
        )
        node = node.get("parent")
    if not chain or not chain[0].available:
        raise ValueError("the thread's post itself is not found or blocked: nothing to answer")
    return chain[::-1]


def thread_gap(kind: str) -> str:
    return "blocked" if kind.endswith("#blockedPost") else "not_found"
