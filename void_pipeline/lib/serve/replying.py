"""The reference client's two ends: the thread fetched as the handler fetches it, and the answer posted as a reply
thread with the ``atproto`` SDK (each post's ``reply.root`` is the thread's root, ``reply.parent`` the post before).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from void_pipeline.lib.curate.handler import PARENT_HEIGHT, ThreadPost, thread_from_response
from void_pipeline.lib.ingest.xrpc import XrpcClient

POST_COLLECTION = "app.bsky.feed.post"


class PostingFailed(RuntimeError):
    """The PDS refused the login or a post; the message says which posts went out before."""


@dataclass(frozen=True)
class StrongRef:
    uri: str
    cid: str

    def as_dict(self) -> dict[str, str]:
        return {"uri": self.uri, "cid": self.cid}


@dataclass(frozen=True)
class FetchedThread:
    thread: list[ThreadPost]  # root first, the post to answer last
    target: StrongRef  # the post answered: the first reply's parent
    root: StrongRef  # the thread's root: every reply's root


def check_post_uri(uri: str) -> None:
    """ValueError unless ``uri`` is a post's AT URI (at://REPO/app.bsky.feed.post/RKEY): the AppView answers a
    profile's or a like's URI with a thread of nothing, which would be answered as an empty mention."""
    parts = uri.removeprefix("at://").split("/")
    if uri.startswith("at://") and len(parts) == 3 and all(parts) and parts[1] == POST_COLLECTION:
        return
    if not uri.startswith("at://"):
        what = "not an AT URI"
    elif len(parts) == 3 and all(parts):
        what = f"a record of {parts[1]}"
    else:
        what = "not a record's URI"
    raise ValueError(
        f"{uri} is not an {POST_COLLECTION} ({what}): reply answers posts, at://DID/{POST_COLLECTION}/RKEY"
    )


def fetch_thread(appview: XrpcClient, uri: str) -> FetchedThread:
    """``app.bsky.feed.getPostThread`` as the handler asks it (parents up to its height, no replies)."""
    check_post_uri(uri)
    response = appview.query("app.bsky.feed.getPostThread", uri=uri, parentHeight=PARENT_HEIGHT, depth=0)
    thread = thread_from_response(response)
    node = response.get("thread") or {}
    post = node.get("post") or {}
    if not post.get("cid"):
        raise ValueError(f"{uri} cannot be answered: the AppView returned it as {node.get('$type', 'nothing')}")
    target = StrongRef(str(post["uri"]), str(post["cid"]))
    reply = (post.get("record") or {}).get("reply") or {}
    root_ref = reply.get("root") or {}
    root = StrongRef(str(root_ref["uri"]), str(root_ref["cid"])) if root_ref.get("cid") else target
    return FetchedThread(thread, target, root)


def post_reply_thread(
    pds_url: str, handle: str, password: str, fetched: FetchedThread, posts: Sequence[str]
) -> list[StrongRef]:
    """Publish ``posts`` as a reply thread under ``fetched.target``: the first replies to it, each next one to the
    post before; all share the thread's root. Returns the created posts' strong refs."""
    from atproto import Client, models  # the SDK (and its pydantic models) only when posting
    from atproto.exceptions import AtProtocolError

    client = Client(base_url=pds_url.rstrip("/"))
    created: list[StrongRef] = []
    try:
        client.login(handle, password, fetch_bsky_profile=False)  # a PDS need not serve app.bsky profiles
        did = client.com.atproto.server.get_session().did
        root, parent = _ref(fetched.root), _ref(fetched.target)
        for text in posts:
            reply_to = models.AppBskyFeedPost.ReplyRef(parent=parent, root=root)
            sent = client.send_post(text, reply_to=reply_to, profile_identify=did)
            created.append(StrongRef(sent.uri, sent.cid))
            parent = _ref(created[-1])
    except AtProtocolError as err:
        done = f"; posted {len(created)} of {len(posts)} first: {[r.uri for r in created]}" if created else ""
        raise PostingFailed(f"posting as {handle} on {pds_url} failed: {_why(err, pds_url)}{done}") from err
    return created


def _why(err: Exception, pds_url: str) -> str:
    """The SDK's transport errors (NetworkError, InvokeTimeoutError) have no message: the reason is the httpx
    error they were raised from."""
    cause = err.__cause__
    if not str(err).strip() and cause is not None:
        return f"cannot reach the PDS {pds_url} ({type(cause).__name__}: {str(cause) or 'no detail'})"
    return f"{type(err).__name__}: {err}"


def _ref(ref: StrongRef) -> Any:
    from atproto import models

    return models.ComAtprotoRepoStrongRef.Main(uri=ref.uri, cid=ref.cid)
