"""A small AppView for the devnet: ``app.bsky.feed.getPosts`` and ``getPostThread`` answered from the PDSes.

Bluesky's real AppView (``@atproto/bsky``) needs Postgres, Redis and a firehose indexer; for the exporter's
tests the part that matters is the XRPC contract, so this service builds the same response shapes (PostView with
its ``embed`` view — images, link cards, videos, quoted posts, as lib/ingest/embed_views.py rebuilds them —,
ThreadViewPost, NotFoundPost; checked against the ``atproto`` SDK's lexicon models in the tests) from live
records: DID → PDS through the PLC, then ``com.atproto.repo.getRecord``. Posts that cannot be read are left
out of ``getPosts``, exactly as the real AppView does. No cache of records, so deletions show at once.

    python -m void_pipeline.testworld.appview --plc-url http://localhost:P --pds-url http://localhost:Q --port R
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from void_pipeline.lib.ingest.embed_views import Quoted, Resolver, embed_view

MAX_URIS = 25  # app.bsky.feed.getPosts lexicon limit
PORT_IN_USE_EXIT = 98


class AppView:
    def __init__(self, plc_url: str, pds_urls: list[str]) -> None:
        self.plc_url = plc_url.rstrip("/")
        self.pds_urls = pds_urls
        self.http = httpx.Client(timeout=10.0, limits=httpx.Limits(max_connections=32))
        self.pool = ThreadPoolExecutor(max_workers=8)
        self._docs: dict[str, dict[str, Any]] = {}
        self._names: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def did_doc(self, did: str) -> dict[str, Any] | None:
        with self._lock:
            if did in self._docs:
                return self._docs[did]
        response = self.http.get(f"{self.plc_url}/{did}")
        if response.status_code != 200:
            return None
        doc: dict[str, Any] = response.json()
        with self._lock:
            self._docs[did] = doc
        return doc

    def display_name(self, pds: str, did: str) -> str | None:
        """The profile record's displayName, as the real AppView shows it in author views (cached per DID)."""
        with self._lock:
            if did in self._names:
                return self._names[did]
        response = self.http.get(
            f"{pds}/xrpc/com.atproto.repo.getRecord",
            params={"repo": did, "collection": "app.bsky.actor.profile", "rkey": "self"},
        )
        value = response.json().get("value", {}) if response.status_code == 200 else {}
        name = value.get("displayName") if isinstance(value.get("displayName"), str) else None
        with self._lock:
            self._names[did] = name
        return name

    def record(self, uri: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(the author view, getRecord's answer) for a record URI, or None when it cannot be read."""
        parts = uri.removeprefix("at://").split("/")
        if not uri.startswith("at://") or len(parts) != 3:
            return None
        did, collection, rkey = parts
        doc = self.did_doc(did)
        if doc is None:
            return None
        pds = next((s["serviceEndpoint"] for s in doc.get("service", []) if s["id"].endswith("#atproto_pds")), None)
        handle = next((a.removeprefix("at://") for a in doc.get("alsoKnownAs", [])), "handle.invalid")
        if pds is None:
            return None
        response = self.http.get(
            f"{pds}/xrpc/com.atproto.repo.getRecord", params={"repo": did, "collection": collection, "rkey": rkey}
        )
        if response.status_code != 200:
            return None
        author = {"$type": "app.bsky.actor.defs#profileViewBasic", "did": did, "handle": handle}
        if name := self.display_name(pds, did):
            author["displayName"] = name
        return author, response.json()

    def quoted(self, uri: str) -> Quoted | None:
        found = self.record(uri)
        if found is None:
            return None
        author, record = found
        return Quoted(record["uri"], record["cid"], author["did"], author["handle"], author.get("displayName"),
                      record["value"], now())  # fmt: skip

    def post_view(self, uri: str) -> dict[str, Any] | None:
        found = self.record(uri)
        return post_view_of(found[0], found[1], self.quoted) if found is not None else None

    def get_posts(self, uris: list[str]) -> dict[str, Any]:
        views = list(self.pool.map(self.post_view, uris))
        return {"posts": [v for v in views if v is not None]}

    def get_post_thread(self, uri: str, parent_height: int) -> dict[str, Any] | None:
        view = self.post_view(uri)
        if view is None:
            return None
        thread: dict[str, Any] = {"$type": "app.bsky.feed.defs#threadViewPost", "post": view}
        node = thread
        for _ in range(parent_height):
            parent_ref = node["post"]["record"].get("reply", {}).get("parent")
            if not parent_ref:
                break
            parent = self.post_view(parent_ref["uri"])
            if parent is None:
                node["parent"] = {
                    "$type": "app.bsky.feed.defs#notFoundPost",
                    "uri": parent_ref["uri"],
                    "notFound": True,
                }
                break
            node["parent"] = {"$type": "app.bsky.feed.defs#threadViewPost", "post": parent}
            node = node["parent"]
        return {"thread": thread}

    def resolve_handle(self, handle: str) -> str | None:
        for pds in self.pds_urls:
            response = self.http.get(f"{pds}/xrpc/com.atproto.identity.resolveHandle", params={"handle": handle})
            if response.status_code == 200:
                return str(response.json()["did"])
        return None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post_view_of(author: dict[str, Any], record: dict[str, Any], resolve: Resolver) -> dict[str, Any]:
    """A PostView from the author's view and getRecord's answer (``uri``, ``cid``, ``value``): with the ``embed``
    view the real AppView builds from the record (quoted posts found by ``resolve``) and its counts (zero here)."""
    view: dict[str, Any] = {
        "$type": "app.bsky.feed.defs#postView",
        "uri": record["uri"],
        "cid": record["cid"],
        "author": author,
        "record": record["value"],
    }
    embed = embed_view(record["value"].get("embed"), author["did"], resolve)
    if embed is not None:
        view["embed"] = embed
    return {**view, "indexedAt": now(), "replyCount": 0, "repostCount": 0, "likeCount": 0, "quoteCount": 0}


def make_handler(app: AppView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise
            return

        def send_json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = parse_qs(url.query)
            method = url.path.removeprefix("/xrpc/")
            if method == "_health":
                self.send_json(200, {"version": "devnet-appview"})
            elif method == "app.bsky.feed.getPosts":
                uris = params.get("uris", [])
                if not uris or len(uris) > MAX_URIS:
                    self.send_json(400, {"error": "InvalidRequest", "message": f"uris: 1 to {MAX_URIS} items"})
                else:
                    self.send_json(200, app.get_posts(uris))
            elif method == "app.bsky.feed.getPostThread":
                uri = params.get("uri", [""])[0]
                height = int(params.get("parentHeight", ["80"])[0])
                thread = app.get_post_thread(uri, height)
                if thread is None:
                    self.send_json(400, {"error": "NotFound", "message": f"Post not found: {uri}"})
                else:
                    self.send_json(200, thread)
            elif method == "com.atproto.identity.resolveHandle":
                did = app.resolve_handle(params.get("handle", [""])[0])
                if did is None:
                    self.send_json(400, {"error": "InvalidRequest", "message": "Unable to resolve handle"})
                else:
                    self.send_json(200, {"did": did})
            else:
                self.send_json(501, {"error": "MethodNotImplemented", "message": f"{method} is not served here"})

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plc-url", required=True)
    parser.add_argument("--pds-url", action="append", default=[])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = AppView(args.plc_url, args.pds_url)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(app))
    except OSError as err:
        print(f"devnet-appview: cannot listen on port {args.port}: {err}", file=sys.stderr)
        return PORT_IN_USE_EXIT if err.errno == errno.EADDRINUSE else 1
    server.daemon_threads = True
    print(json.dumps({"ready": True, "service": "appview", "url": f"http://localhost:{args.port}"}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
