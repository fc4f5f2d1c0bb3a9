"""The export as a separate process, so a test can SIGKILL it at random points and resume it.

python -m void_pipeline_tests.ingest.export_worker OUT PDS_URL APPVIEW_URL PLC_URL DID HANDLE
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from void_pipeline.lib.corpus import COLLECTIONS, POST
from void_pipeline.lib.export import ExportOptions, export_collection, repo_dir, write_parquet_atomic
from void_pipeline.lib.identity import IdentityResolver
from void_pipeline.lib.resilience import HostLimit, ResilientHttp
from void_pipeline.lib.threads import AncestorFetcher, PostCache, build_thread_context, own_posts_from_rows
from void_pipeline.lib.xrpc import XrpcClient


def main() -> None:
    out, pds_url, appview_url, plc_url, did, handle = sys.argv[1:7]
    paths = repo_dir(Path(out), did)
    with ResilientHttp(default_limit=HostLimit(1000, 100)) as http:
        pds = XrpcClient(pds_url, client=http)
        for collection in COLLECTIONS:
            export_collection(pds, did, collection, paths, ExportOptions(method="list_records"), log=print)
        posts = pl.read_parquet(paths.records(POST))
        fetcher = AncestorFetcher(
            http, appview_url, IdentityResolver(http, plc_url), PostCache(paths.post_cache), concurrency=2, log=print
        )
        replies = posts.filter(pl.col("reply_parent_uri").is_not_null())
        frame = build_thread_context(replies, own_posts_from_rows(posts, handle), fetcher)
        write_parquet_atomic(frame, paths.thread_context)
    print("done", flush=True)


if __name__ == "__main__":
    main()
