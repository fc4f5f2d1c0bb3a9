"""A post's ``embed`` view as Bluesky's AppView writes it in ``getPostThread`` and ``getPosts``, rebuilt from the
post's record: what the handler's thread YAML shows for posts with images, link cards, videos and quotes.

The AppView (``@atproto/bsky``, ``views/index.ts``: ``embed``, ``imagesEmbed``, ``externalEmbed``, ``videoEmbed``,
``recordEmbed``, ``embedPostView``, ``recordWithMediaEmbed``) turns the record's embed into a view:

- ``app.bsky.embed.images`` → ``#view`` with, per image, ``thumb`` and ``fullsize`` CDN URLs
  (``https://cdn.bsky.app/img/feed_thumbnail|feed_fullsize/plain/<did>/<blob cid>@jpeg``), ``alt`` and the
  record's ``aspectRatio`` when it has one;
- ``app.bsky.embed.external`` → ``#view`` with ``external``: ``uri``, ``title``, ``description`` and ``thumb`` (a
  thumbnail CDN URL) when the card has an image;
- ``app.bsky.embed.video`` → ``#view``: the blob's ``cid``, ``playlist`` and ``thumbnail`` URLs
  (``https://video.bsky.app/watch/<did, URL-encoded>/<cid>/playlist.m3u8|thumbnail.jpg``), ``alt``, ``aspectRatio``;
- ``app.bsky.embed.record`` quoting a post → ``#view`` with a ``#viewRecord`` (``uri``, ``cid``, ``author``,
  ``value`` = the quoted record, ``indexedAt``, ``embeds`` = the quoted post's own embed view, one level deep), or
  ``#viewNotFound`` (``notFound: true``) when the AppView cannot find the post, ``#viewBlocked`` when a block
  hides it;
- ``app.bsky.embed.recordWithMedia`` → ``#view`` with ``media`` (one of the above) and ``record`` (the quote's
  view without its ``$type``).

Depth as the AppView counts it: a post's embed is depth 1; a quoted post's own embed (depth 2) is hydrated and shown
in ``embeds``; a quote inside that shows its record without ``embeds``.

Not rebuilt (None: no view): quotes of records other than posts (feed generators, lists, labelers, starter packs —
the AppView hydrates those from data a record does not hold), and embed types this module does not know. The
counts and labels a live AppView adds to a ``#viewRecord`` are not known from records (the handler strips them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import quote

IMAGE_CDN = "https://cdn.bsky.app/img"
VIDEO_CDN = "https://video.bsky.app/watch"
POST_COLLECTION = "app.bsky.feed.post"


class Quoted(NamedTuple):
    """A quoted post as the AppView knows it: its author view and its record."""

    uri: str
    cid: str
    did: str
    handle: str
    display_name: str | None
    record: dict[str, Any]
    indexed_at: str


BLOCKED = "blocked"
# uri → the quoted post, BLOCKED when a block hides it, None when it cannot be found.
Resolver = Callable[[str], Quoted | str | None]


def image_url(preset: str, did: str, cid: str) -> str:
    return f"{IMAGE_CDN}/{preset}/plain/{did}/{cid}@jpeg"


def video_url(did: str, cid: str, name: str) -> str:
    return f"{VIDEO_CDN}/{quote(did, safe='')}/{quote(cid, safe='')}/{name}"


def blob_cid(blob: Any) -> str | None:
    """A blob's CID: ``{"$type": "blob", "ref": {"$link": cid}}``, or the legacy ``{"cid": cid}``."""
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    if isinstance(ref, dict) and isinstance(ref.get("$link"), str):
        return str(ref["$link"])
    return str(blob["cid"]) if isinstance(blob.get("cid"), str) else None


def _optional(view: dict[str, Any], source: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        if key in source:
            view[key] = source[key]
    return view


def images_view(embed: dict[str, Any], did: str) -> dict[str, Any] | None:
    images = []
    for image in embed.get("images") or []:
        cid = blob_cid(image.get("image")) if isinstance(image, dict) else None
        if cid is None:
            return None
        view = {
            "thumb": image_url("feed_thumbnail", did, cid),
            "fullsize": image_url("feed_fullsize", did, cid),
            "alt": image.get("alt", ""),
        }
        images.append(_optional(view, image, "aspectRatio"))
    return {"$type": "app.bsky.embed.images#view", "images": images}


def external_view(embed: dict[str, Any], did: str) -> dict[str, Any] | None:
    card = embed.get("external")
    if not isinstance(card, dict) or not isinstance(card.get("uri"), str):
        return None
    external = {"uri": card["uri"], "title": card.get("title", ""), "description": card.get("description", "")}
    thumb = blob_cid(card.get("thumb"))
    if thumb is not None:
        external["thumb"] = image_url("feed_thumbnail", did, thumb)
    return {"$type": "app.bsky.embed.external#view", "external": external}


def video_view(embed: dict[str, Any], did: str) -> dict[str, Any] | None:
    cid = blob_cid(embed.get("video"))
    if cid is None:
        return None
    view = {
        "$type": "app.bsky.embed.video#view",
        "cid": cid,
        "playlist": video_url(did, cid, "playlist.m3u8"),
        "thumbnail": video_url(did, cid, "thumbnail.jpg"),
    }
    return _optional(view, embed, "alt", "aspectRatio")


def quoted_view(embed: dict[str, Any], resolve: Resolver | None, depth: int) -> dict[str, Any] | None:
    """The ``record`` of an ``app.bsky.embed.record#view``: the quoted post, or why it is not shown."""
    ref = embed.get("record")
    uri = ref.get("uri") if isinstance(ref, dict) else None
    if not isinstance(uri, str):
        return None
    parts = uri.removeprefix("at://").split("/")
    if len(parts) != 3 or parts[1] != POST_COLLECTION:
        return None  # feed generators, lists, labelers, starter packs: hydrated from data a record does not hold
    found = resolve(uri) if resolve is not None else None
    if found == BLOCKED:
        return {"$type": "app.bsky.embed.record#viewBlocked", "uri": uri, "blocked": True, "author": {"did": parts[0]}}
    if not isinstance(found, Quoted):
        return {"$type": "app.bsky.embed.record#viewNotFound", "uri": uri, "notFound": True}
    author = {"did": found.did, "handle": found.handle}
    if found.display_name:
        author["displayName"] = found.display_name
    view: dict[str, Any] = {
        "$type": "app.bsky.embed.record#viewRecord",
        "uri": found.uri,
        "cid": found.cid,
        "author": author,
        "value": found.record,
        "indexedAt": found.indexed_at,
    }
    if depth <= 1:  # the quoted post's own embed, hydrated one level further down
        inner = found.record.get("embed")
        inner_view = embed_view(inner, found.did, resolve, depth + 1) if isinstance(inner, dict) else None
        view["embeds"] = [inner_view] if inner_view is not None else []
    return view


def embed_view(embed: Any, did: str, resolve: Resolver | None = None, depth: int = 1) -> dict[str, Any] | None:
    """The AppView's view of a record's ``embed`` (a post by ``did``), or None where it would show none or this
    module cannot rebuild it. ``resolve`` finds quoted posts; without it a quote shows as not found."""
    if not isinstance(embed, dict):
        return None
    kind = embed.get("$type")
    if kind == "app.bsky.embed.images":
        return images_view(embed, did)
    if kind == "app.bsky.embed.external":
        return external_view(embed, did)
    if kind == "app.bsky.embed.video":
        return video_view(embed, did)
    if kind == "app.bsky.embed.record":
        record = quoted_view(embed, resolve, depth)
        return {"$type": "app.bsky.embed.record#view", "record": record} if record is not None else None
    if kind == "app.bsky.embed.recordWithMedia":
        media = embed.get("media")
        media_view = embed_view(media, did) if isinstance(media, dict) and media.get("$type") != kind else None
        quoted = embed.get("record")
        record = quoted_view(quoted, resolve, depth) if isinstance(quoted, dict) else None
        if media_view is None or record is None or media_view["$type"] == "app.bsky.embed.record#view":
            return None
        return {"$type": "app.bsky.embed.recordWithMedia#view", "record": {"record": record}, "media": media_view}
    return None
