"""The thread as the newer handler layout shows it: the fork asa-degroff/umbra at cae8c07, ``bsky_utils.py``
``thread_to_yaml_string`` (same lineage as letta-ai/example-social-agent; its requirements pin atproto 0.0.61, whose
field set lib/curate/handler.py's models show). What it does, and this module the same way with its own code:

- each post of the visible thread (the mention and its parents, as in lib/curate/handler.py; replies below the
  mention are left out: a fresh mention has none) becomes a dict read from the SDK models' attributes:
  ``uri``, ``cid``, ``author`` {``handle``, ``display_name``, ``did``}, ``record`` {``text``, ``createdAt`` (the
  record's time, under that name), ``links`` when link facets give any: [{``url``, ``text`` = the facet's bytes of
  the text, or the URL when they are not UTF-8}]}, ``embed`` (below) when the post has one, ``parent_uri`` (the
  record's reply parent, or None);
- the embed is a summary of the post-level view: ``{type: images, images: [{fullsize, thumb, alt}]}``,
  ``{type: external_link, link: {url, title, description, thumbnail}}``, ``{type: quote_post, quote: ...}`` (a shown
  post: ``status: available``, ``uri``, ``author`` {``handle``, ``display_name`` or the handle}, ``text``,
  ``metrics`` {likes, reposts, replies, quotes} for counts the view has, ``embeds`` [{type: images, count} |
  {type: video} | {type: external_link, url, title}]; else ``status`` not_found / blocked / detached with a
  ``message``), ``{type: quote_with_media, quote, media}`` or ``{type: video, thumbnail, alt}``; quotes of feeds,
  lists and other records give no embed;
- the handler's strip list plus ``did`` at every depth, then empties pruned (lib/curate/handler.py's rule);
- the text: ``THREAD STRUCTURE:``, one line per post (``@handle: text``, newlines shown as `` | ``; the root without
  a connector, each reply under its parent with ``└─ `` or ``├─ ``, deeper levels indented by ``   `` or ``│  ``),
  a blank line, ``FULL POST DATA:``, then ``yaml.dump({"posts": [...]}, indent=2, allow_unicode=True)``. The
  profile ``umbra@cae8c07`` is that layout (the function's default, ``include_tree_view=True``);
  ``umbra@cae8c07/yaml`` is the YAML alone (what umbra's own mention handler asks for at cae8c07).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from void_pipeline.lib.curate.handler import (
    HANDLER_STRIPS,
    HandlerProfile,
    ThreadPost,
    plain,
    post_view,
    posts_text,
    pruned,
)
from void_pipeline.lib.curate.handler_yaml import list_item
from void_pipeline.lib.ingest.embed_views import Resolver

UMBRA_VERSION = "asa-degroff/umbra bsky_utils.py@cae8c07"
UMBRA_STRIPS = HANDLER_STRIPS | {"did"}


def links(text: str, facets: Any) -> list[dict[str, str]]:
    """The link facets' URLs with the text they cover (byte offsets into the UTF-8 text)."""
    found = []
    data = text.encode("utf-8")
    for facet in facets:
        for feature in facet.features:
            if hasattr(feature, "uri"):
                try:
                    covered = data[facet.index.byte_start : facet.index.byte_end].decode("utf-8")
                except UnicodeDecodeError:
                    covered = feature.uri
                found.append({"url": feature.uri, "text": covered})
    return found


def _kind(value: Any) -> str:
    return str(getattr(value, "py_type", "") or "")


def image_list(images: Any, source: str | None = None) -> list[dict[str, Any]]:
    shown = []
    for image in images or []:
        item = {"fullsize": getattr(image, "fullsize", None), "thumb": getattr(image, "thumb", None)}
        item["alt"] = getattr(image, "alt", "") or ""
        if source:
            item["source"] = source
        shown.append(item)
    return shown


def card(external: Any) -> dict[str, Any]:
    return {
        "url": getattr(external, "uri", ""),
        "title": getattr(external, "title", ""),
        "description": getattr(external, "description", ""),
        "thumbnail": getattr(external, "thumb", None),
    }


def quote(record: Any) -> dict[str, Any] | None:
    """A quote's summary from the quoted record's view (a #viewRecord, #viewNotFound, ...)."""
    kind = _kind(record)
    for marker, status, message in (
        ("viewNotFound", "not_found", "Quoted post was deleted or not found"),
        ("viewBlocked", "blocked", "Quoted post is from a blocked account"),
        ("viewDetached", "detached", "Quoted post was detached"),
    ):
        if marker in kind:
            return {"status": status, "uri": getattr(record, "uri", ""), "message": message}
    if "viewRecord" not in kind and not hasattr(record, "author"):
        return None
    shown: dict[str, Any] = {"status": "available", "uri": getattr(record, "uri", "")}
    author = getattr(record, "author", None)
    if author:
        handle = getattr(author, "handle", "unknown")
        shown["author"] = {"handle": handle, "display_name": getattr(author, "display_name", "") or handle}
    value = getattr(record, "value", None)
    if value:
        shown["text"] = value.get("text", "") if isinstance(value, dict) else getattr(value, "text", "")
    metrics = {
        name: getattr(record, field)
        for name, field in (
            ("likes", "like_count"),
            ("reposts", "repost_count"),
            ("replies", "reply_count"),
            ("quotes", "quote_count"),
        )
        if getattr(record, field, None) is not None
    }
    if metrics:
        shown["metrics"] = metrics
    nested = []
    for inner in getattr(record, "embeds", None) or []:
        inner_kind = _kind(inner)
        if "images" in inner_kind:
            nested.append({"type": "images", "count": len(getattr(inner, "images", []))})
        elif "video" in inner_kind:
            nested.append({"type": "video"})
        elif "external" in inner_kind and getattr(inner, "external", None):
            nested.append({"type": "external_link", "url": inner.external.uri, "title": inner.external.title})
    if nested:
        shown["embeds"] = nested
    return shown


def embed_summary(embed: Any) -> dict[str, Any] | None:
    """The post-level embed view as umbra summarizes it (None: no embed entry)."""
    kind = _kind(embed)
    if "record" not in kind and "images" in kind:
        images = image_list(embed.images)
        return {"type": "images", "images": images} if images else None
    if "record" not in kind and "external" in kind:
        return {"type": "external_link", "link": card(embed.external)}
    if kind == "app.bsky.embed.record#view":
        quoted = quote(embed.record)
        return {"type": "quote_post", "quote": quoted} if quoted else None
    if "recordWithMedia" in kind:
        summary: dict[str, Any] = {"type": "quote_with_media"}
        quoted = quote(getattr(embed.record, "record", None))
        if quoted:
            summary["quote"] = quoted
        media, media_kind = embed.media, _kind(embed.media)
        if "images" in media_kind:
            images = image_list(media.images)
            if images:
                summary["media"] = {"type": "images", "images": images}
        elif "external" in media_kind:
            summary["media"] = {"type": "external_link", "link": card(media.external)}
        elif "video" in media_kind:
            summary["media"] = {"type": "video", "thumbnail": media.thumbnail, "alt": media.alt}
        return summary
    if "video" in kind:
        return {"type": "video", "thumbnail": getattr(embed, "thumbnail", None), "alt": getattr(embed, "alt", None)}
    return None


def umbra_post(post: ThreadPost, quoted: Resolver | None = None) -> dict[str, Any]:
    """The post's dict as umbra's ``flatten_thread_structure`` builds it, before the strip."""
    view = post_view(post, quoted)
    author, record = view.author, view.record
    text = getattr(record, "text", "")
    shown: dict[str, Any] = {
        "uri": view.uri,
        "cid": view.cid,
        "author": {"handle": author.handle, "display_name": author.display_name, "did": author.did},
    }
    record_dict: dict[str, Any] = {"text": text, "createdAt": getattr(record, "created_at", "unknown")}
    facets = getattr(record, "facets", None)
    if facets:
        found = links(text, facets)
        if found:
            record_dict["links"] = found
    shown["record"] = record_dict
    if view.embed:
        summary = embed_summary(view.embed)
        if summary:
            shown["embed"] = summary
    reply = getattr(record, "reply", None)
    shown["parent_uri"] = reply.parent.uri if reply and reply.parent else None
    return shown


def umbra_item(post: ThreadPost, quoted: Resolver | None = None) -> str:
    """One post's YAML list item in umbra's layout."""
    data = pruned(plain(umbra_post(post, quoted)), UMBRA_STRIPS)
    written = list_item(data)
    if written is not None:
        return written
    dumped: str = yaml.dump([data], indent=2, allow_unicode=True, default_flow_style=False)
    return dumped


def tree_prefixes(posts: Sequence[tuple[str, str | None]]) -> dict[str, str]:
    """Each post's connector from (uri, parent uri) pairs: a lone root has none; otherwise each post sits under
    its parent with ``└─ `` (the last child) or ``├─ ``, behind ``   `` / ``│  `` for the levels above."""
    known = {uri for uri, _ in posts if uri}
    children: dict[str, list[str]] = {}
    roots = []
    for uri, parent in posts:
        if uri:
            if parent and parent in known:
                children.setdefault(parent, []).append(uri)
            else:
                roots.append(uri)
    prefixes: dict[str, str] = {}

    def place(uri: str, last: list[bool]) -> None:
        if uri in prefixes:
            return
        lead = "".join("   " if done else "│  " for done in last[:-1])
        prefixes[uri] = (lead + ("└─ " if last[-1] else "├─ ")) if last else ""
        kids = children.get(uri, [])
        for i, kid in enumerate(kids):
            place(kid, [*last, i == len(kids) - 1])

    if len(roots) == 1:
        prefixes[roots[0]] = ""
        kids = children.get(roots[0], [])
        for i, kid in enumerate(kids):
            place(kid, [i == len(kids) - 1])
    else:
        for i, root in enumerate(roots):
            place(root, [i == len(roots) - 1])
    return prefixes


def tree_fields(post: ThreadPost) -> tuple[str, str | None, str, str]:
    """(uri, parent uri, handle, text) as umbra's tree reads them, from the post without the SDK."""
    record: dict[str, Any] = json.loads(post.record_json) if post.record_json else {}
    reply: dict[str, Any] = record["reply"] if isinstance(record.get("reply"), dict) else {}
    parent: dict[str, Any] = reply["parent"] if isinstance(reply.get("parent"), dict) else {}
    text = record.get("text", post.text or "")
    return post.uri, parent.get("uri"), post.author_handle or "handle.invalid", text


def tree_lines(posts: Sequence[ThreadPost]) -> str:
    shown = [tree_fields(post) for post in posts]
    prefixes = tree_prefixes([(uri, parent) for uri, parent, _, _ in shown])
    return "\n".join(
        f"{prefixes.get(uri, '')}@{handle}: {text.replace(chr(10), ' | ')}" for uri, _, handle, text in shown
    )


def umbra_text(posts: Sequence[ThreadPost], items: Sequence[str]) -> str:
    """``THREAD STRUCTURE:`` with the tree, a blank line, ``FULL POST DATA:`` and the YAML."""
    if not posts:
        return posts_text(posts, items)
    return f"THREAD STRUCTURE:\n{tree_lines(posts)}\n\nFULL POST DATA:\n{posts_text(posts, items)}"


UMBRA_PROFILES = {
    "umbra@cae8c07": HandlerProfile("umbra@cae8c07", UMBRA_VERSION, "atproto 0.0.61", umbra_item, umbra_text),
    "umbra@cae8c07/yaml": HandlerProfile("umbra@cae8c07/yaml", UMBRA_VERSION, "atproto 0.0.61", umbra_item, posts_text),
}
