"""Posts with embeds as the handlers show them: the post-level ``embed`` view getPostThread carries (images, link
cards, videos, quotes) rebuilt from records, checked against YAML derived by hand from the handlers' algorithms —
example-social-agent@e7a2a05 (SDK models → attributes → strip list → prune empties → yaml.dump) and the umbra@cae8c07
layout (tree view + summarized posts) — and a thread served by the devnet AppView's getPostThread renders the same
prompt as the training path."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from void_pipeline.lib.curate import handler
from void_pipeline.lib.curate.handler import (
    ThreadPost,
    handler_profile,
    post_item,
    quoted_posts,
    thread_from_response,
    thread_yaml,
)
from void_pipeline.lib.curate.prompt import PromptTemplate, render_mention
from void_pipeline.testworld.appview import post_view_of

ADA = ("did:plc:aaa", "ada.test", "Ada")
VOID = ("did:plc:void", "void.test", "void")
WHEN = "2025-06-01T10:00:00.000Z"
QUOTED_URI = "at://did:plc:void/app.bsky.feed.post/3kq"


def blob(cid: str) -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": cid}, "mimeType": "image/jpeg", "size": 1234}


def post(uri: str, who: tuple[str, str, str | None], record: dict[str, Any]) -> ThreadPost:
    record = {"$type": "app.bsky.feed.post", "createdAt": WHEN, **record}
    return ThreadPost(uri, who[1], who[0], record["text"], record["createdAt"], display_name=who[2], cid="bafyc",
                      record_json=json.dumps(record))  # fmt: skip


def ada_post(embed: dict[str, Any], text: str) -> ThreadPost:
    return post("at://did:plc:aaa/app.bsky.feed.post/3kada", ADA, {"text": text, "embed": embed})


def quoting(uri: str = QUOTED_URI) -> dict[str, Any]:
    return {"$type": "app.bsky.embed.record", "record": {"uri": uri, "cid": "bafyq"}}


QUOTED = post(
    QUOTED_URI,
    VOID,
    {
        "text": "The scale is new.",
        "langs": ["en"],
        "embed": {
            "$type": "app.bsky.embed.external",
            "external": {"uri": "https://x.test/s", "title": "Scale", "description": ""},
        },
    },
)
KNOWN = quoted_posts({QUOTED_URI: QUOTED})
ADA_AUTHOR = "- author:\n    did: did:plc:aaa\n    display_name: Ada\n    handle: ada.test\n"

# Each case: the record's embed, and the post's item derived by hand. The post-level view shows what survives the
# strip list (alt; title and description; the quoted author and record; not_found), the record's own embed shows
# it again in record form (blobs: ref, mime_type and size stripped, so an image keeps only its alt; a quote's strong
# ref keeps nothing and disappears).
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    # aspect_ratio, thumb and fullsize stripped; an image with blank alt stays as an empty item of the list
    "images": (
        {
            "$type": "app.bsky.embed.images",
            "images": [
                {"alt": "a red fox in snow", "image": blob("bafkreifox"), "aspectRatio": {"width": 4, "height": 3}},
                {"alt": "", "image": blob("bafkreiblank")},
            ],
        },
        "look at this",
        ADA_AUTHOR + "  embed:\n    images:\n    - alt: a red fox in snow\n    - {}\n"
        "  record:\n    embed:\n      images:\n      - alt: a red fox in snow\n      - {}\n    text: look at this\n",
    ),
    # the card's uri and thumb stripped: title and description stay
    "external": (
        {
            "$type": "app.bsky.embed.external",
            "external": {
                "uri": "https://example.com/fox",
                "title": "Foxes in winter",
                "description": "How foxes hunt under snow.",
                "thumb": blob("bafkreithumb"),
            },
        },
        "read this",
        ADA_AUTHOR + "  embed:\n    external:\n      description: How foxes hunt under snow.\n"
        "      title: Foxes in winter\n  record:\n    embed:\n      external:\n"
        "        description: How foxes hunt under snow.\n        title: Foxes in winter\n    text: read this\n",
    ),
    # viewRecord: uri, cid, indexedAt stripped; the quoted record's createdAt and langs stripped; its own embed
    # (a card with a blank description) shown in `embeds` (the view) and in `value` (the record)
    "record": (
        quoting(),
        "is this right?",
        ADA_AUTHOR + "  embed:\n    record:\n      author:\n        did: did:plc:void\n        display_name: void\n"
        "        handle: void.test\n      embeds:\n      - external:\n          title: Scale\n"
        "      value:\n        embed:\n          external:\n            title: Scale\n"
        "        text: The scale is new.\n  record:\n    text: is this right?\n",
    ),
    # media and the quote side by side; the quoted post's view inside `record.record`
    "recordWithMedia": (
        {
            "$type": "app.bsky.embed.recordWithMedia",
            "record": quoting(),
            "media": {"$type": "app.bsky.embed.images", "images": [{"alt": "fox again", "image": blob("bafkreifox2")}]},
        },
        "same fox",
        ADA_AUTHOR + "  embed:\n    media:\n      images:\n      - alt: fox again\n    record:\n      record:\n"
        "        author:\n          did: did:plc:void\n          display_name: void\n          handle: void.test\n"
        "        embeds:\n        - external:\n            title: Scale\n        value:\n          embed:\n"
        "            external:\n              title: Scale\n          text: The scale is new.\n"
        "  record:\n    embed:\n      media:\n        images:\n        - alt: fox again\n    text: same fox\n",
    ),
    # a quoted post the AppView cannot find: #viewNotFound keeps only notFound
    "not found quote": (
        quoting("at://did:plc:gone/app.bsky.feed.post/3kx"),
        "what did they say?",
        ADA_AUTHOR + "  embed:\n    record:\n      not_found: true\n  record:\n    text: what did they say?\n",
    ),
    # the video view's cid stripped, its playlist and thumbnail URLs (the DID URL-encoded) are not in the list
    "video": (
        {"$type": "app.bsky.embed.video", "video": blob("bafkreivid"), "alt": "a fox running"},
        "fast",
        ADA_AUTHOR + "  embed:\n    alt: a fox running\n"
        "    playlist: https://video.bsky.app/watch/did%3Aplc%3Aaaa/bafkreivid/playlist.m3u8\n"
        "    thumbnail: https://video.bsky.app/watch/did%3Aplc%3Aaaa/bafkreivid/thumbnail.jpg\n"
        "  record:\n    embed:\n      alt: a fox running\n    text: fast\n",
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_a_post_with_an_embed_shows_the_appviews_embed_view_as_the_handler_does(kind: str) -> None:
    embed, text, expected = CASES[kind]
    assert post_item(ada_post(embed, text), KNOWN) == expected
    assert thread_yaml([ada_post(embed, text)], quoted=KNOWN) == "posts:\n" + expected


def getpostthread(thread: list[ThreadPost]) -> dict[str, Any]:
    """The devnet AppView's getPostThread answer for ``thread`` (root first), its post views built by the AppView's
    own code from the records, quoted posts resolved as it resolves them."""
    from void_pipeline.lib.ingest.embed_views import Quoted

    by_uri = {p.uri: p for p in [*thread, QUOTED]}

    def author(p: ThreadPost) -> dict[str, Any]:
        view = {"$type": "app.bsky.actor.defs#profileViewBasic", "did": p.author_did, "handle": p.author_handle}
        return {**view, "displayName": p.display_name} if p.display_name else view

    def resolve(uri: str) -> Quoted | None:
        p = by_uri.get(uri)
        return None if p is None else Quoted(uri, "bafyq", p.author_did or "", p.author_handle or "",
                                            p.display_name, json.loads(p.record_json or "{}"), WHEN)  # fmt: skip

    node: dict[str, Any] | None = None
    for p in thread:
        view = post_view_of(
            author(p), {"uri": p.uri, "cid": p.cid, "value": json.loads(p.record_json or "{}")}, resolve
        )
        node = {"$type": "app.bsky.feed.defs#threadViewPost", "post": view, **({"parent": node} if node else {})}
    return {"thread": node}


def test_a_thread_served_by_the_devnet_appview_renders_the_training_prompt() -> None:
    root = post("at://did:plc:void/app.bsky.feed.post/3kroot", VOID, {"text": "foxes?"})
    reply = {"root": {"uri": root.uri, "cid": "bafyc"}, "parent": {"uri": root.uri, "cid": "bafyc"}}
    thread = [root]
    for i, (embed, text, _) in enumerate(CASES.values()):
        thread.append(post(f"at://did:plc:aaa/app.bsky.feed.post/3k{i}", ADA, {"text": text, "embed": embed,
                                                                              "reply": reply}))  # fmt: skip
    template = PromptTemplate.from_file()
    served = thread_from_response(getpostthread(thread))
    assert all(p.embed_json for p in served[1:]) and not served[0].embed_json  # the views' embeds are kept
    # training renders each post's item once (as a dataset does), quoted posts found among the posts it knows
    items = {p.uri: post_item(p, KNOWN) for p in thread}
    assert render_mention(served, template) == render_mention(thread, template, items)
    assert thread_yaml(served) == thread_yaml(thread, quoted=KNOWN)
    for profile in ("umbra@cae8c07", "umbra@cae8c07/yaml"):
        assert thread_yaml(served, profile=profile) == thread_yaml(thread, profile=profile, quoted=KNOWN)


UMBRA_ROOT = post("at://did:plc:void/app.bsky.feed.post/3kroot", VOID, {"text": "Scale is new.\nMechanisms are old."})
UMBRA_REPLY = post(
    "at://did:plc:aaa/app.bsky.feed.post/3kp2",
    (ADA[0], ADA[1], None),
    {
        "text": "see example.com for more",
        "createdAt": "2025-06-01T10:05:00.000Z",
        "facets": [{"index": {"byteStart": 4, "byteEnd": 15},
                    "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com"}]}],
        "reply": {"root": {"uri": UMBRA_ROOT.uri, "cid": "bafyc"}, "parent": {"uri": UMBRA_ROOT.uri, "cid": "bafyc"}},
        "embed": {"$type": "app.bsky.embed.external", "external": {"uri": "https://example.com", "title": "Example",
                  "description": "An example page.", "thumb": blob("bafkreithumb")}},
    },
)  # fmt: skip
UMBRA_MENTION = post(
    "at://did:plc:aaa/app.bsky.feed.post/3kp3",
    (ADA[0], ADA[1], None),
    {
        "text": "@void.test thoughts?",
        "createdAt": "2025-06-01T10:09:00.000Z",
        "reply": {"root": {"uri": UMBRA_ROOT.uri, "cid": "bafyc"}, "parent": {"uri": UMBRA_REPLY.uri, "cid": "bafyc"}},
        "embed": quoting(UMBRA_ROOT.uri),
    },
)
# Derived by hand from umbra's thread_to_yaml_string: the tree shows the root bare and each reply under its parent
# (newlines as " | "); the posts keep author {handle, display_name} (did stripped, a missing display name pruned),
# record {createdAt (not in the strip list: quoted, as YAML would read it as a timestamp), links from the link
# facet with the text its bytes cover, text}, the embed summary (the card with its thumbnail URL, which the strip
# list does not name; the quote with its author, display name and text, its uri stripped, no metrics: the rebuilt
# view has no counts) and parent_uri (the root has none).
UMBRA_EXPECTED = """THREAD STRUCTURE:
@void.test: Scale is new. | Mechanisms are old.
└─ @ada.test: see example.com for more
   └─ @ada.test: @void.test thoughts?

FULL POST DATA:
posts:
- author:
    display_name: void
    handle: void.test
  record:
    createdAt: '2025-06-01T10:00:00.000Z'
    text: 'Scale is new.

      Mechanisms are old.'
- author:
    handle: ada.test
  embed:
    link:
      description: An example page.
      thumbnail: https://cdn.bsky.app/img/feed_thumbnail/plain/did:plc:aaa/bafkreithumb@jpeg
      title: Example
      url: https://example.com
    type: external_link
  parent_uri: at://did:plc:void/app.bsky.feed.post/3kroot
  record:
    createdAt: '2025-06-01T10:05:00.000Z'
    links:
    - text: example.com
      url: https://example.com
    text: see example.com for more
- author:
    handle: ada.test
  embed:
    quote:
      author:
        display_name: void
        handle: void.test
      status: available
      text: 'Scale is new.

        Mechanisms are old.'
    type: quote_post
  parent_uri: at://did:plc:aaa/app.bsky.feed.post/3kp2
  record:
    createdAt: '2025-06-01T10:09:00.000Z'
    text: '@void.test thoughts?'
"""


def test_the_umbra_layout_is_the_tree_then_the_full_post_data() -> None:
    thread = [UMBRA_ROOT, UMBRA_REPLY, UMBRA_MENTION]
    known = quoted_posts({p.uri: p for p in thread})
    assert thread_yaml(thread, profile="umbra@cae8c07", quoted=known) == UMBRA_EXPECTED
    assert (
        thread_yaml(thread, profile="umbra@cae8c07/yaml", quoted=known) == UMBRA_EXPECTED.split("FULL POST DATA:\n")[1]
    )
    # a thread's items written once per profile give the same text
    items = {p.uri: post_item(p, known, "umbra@cae8c07") for p in thread}
    assert thread_yaml(thread, items, profile="umbra@cae8c07") == UMBRA_EXPECTED
    with pytest.raises(
        ValueError, match=r"unknown handler profile 'umbra' \(known: example-social-agent@e7a2a05, umbra"
    ):
        handler_profile("umbra")


def test_text_only_posts_keep_their_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Embeds take the SDK path; a text-only post is written without it (tens of thousands per dataset): with the
    SDK path made to fail, text-only posts still render, to the bytes the SDK path gives them."""
    posts = [post(f"at://did:plc:aaa/app.bsky.feed.post/{i}", ADA, {"text": text, "langs": ["en"]})
             for i, text in enumerate(["plain words", "a reply, with punctuation and digits 42.", "Ada says hi"])]  # fmt: skip
    through_sdk = [yaml.dump([handler.post_data(p)], indent=2, allow_unicode=True, default_flow_style=False) for p in posts]  # fmt: skip

    def no_sdk(*_: object, **__: object) -> Any:
        raise AssertionError("a text-only post took the SDK path")

    monkeypatch.setattr(handler, "post_data", no_sdk)
    assert [post_item(p) for p in posts] == through_sdk
    with pytest.raises(AssertionError, match="SDK path"):  # the patch is where an embed goes
        post_item(ada_post(*CASES["external"][:2]))


def test_fields_newer_than_the_handlers_sdk_stay_out_of_the_yaml() -> None:
    """A live AppView sends fields atproto 0.0.61 (the handlers' pin) has no attribute for: the handler never
    shows them, though the orchestrator's newer SDK parses them."""
    embed, text, expected = CASES["external"]
    response = getpostthread([ada_post(embed, text)])
    view = response["thread"]["post"]
    view["bookmarkCount"] = 3
    view["author"]["pronouns"] = "she/her"
    view["embed"]["external"].update(readingTime=4, associatedRefs=[{"uri": "at://did:plc:x/a.b/1", "cid": "bafyz"}])
    assert thread_yaml(thread_from_response(response)) == "posts:\n" + expected


def test_ingestion_keeps_the_embed_view_getposts_sends() -> None:
    from void_pipeline.lib.ingest.threads import ANCESTOR_STRUCT, post_from_record

    embed, text, _ = CASES["record"]
    view = getpostthread([ada_post(embed, text)])["thread"]["post"]
    kept = post_from_record(view["uri"], view["cid"], view["record"], ADA[0], ADA[1], "appview", ADA[2], view["embed"])
    assert json.loads(kept.embed_json or "{}") == view["embed"] and "embed_json" in ANCESTOR_STRUCT.to_schema()
    as_thread = ThreadPost(kept.uri, ADA[1], ADA[0], text, WHEN, display_name=ADA[2], cid=kept.cid,
                           record_json=kept.record_json, embed_json=kept.embed_json)  # fmt: skip
    assert post_item(as_thread) == CASES["record"][2]  # the kept view shows the quote without a resolver
