"""Our exporter vs the original method, side by side on one devnet (numbers for the issue note).

    python benchmarks/export_bench.py --agent-posts 50000

Both go through the same fault proxy: a fixed latency per request (default 30 ms) and fixed rate limits (PDS
10 requests/s, i.e. 3000 per 5 min; AppView 50/s). The original method — listRecords page by page with a 1 s
pause, then one getPostThread per reply's parent and one per its root — runs on a subset (pages, replies) and
is extrapolated linearly to the whole corpus; it says so in its output. Ours runs whole, as a separate process
(`void-pipeline export`), so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import polars as pl

from void_pipeline.lib.files import write_parquet_atomic
from void_pipeline.lib.ingest.identity import IdentityResolver
from void_pipeline.lib.ingest.records import POST, Rejection, normalise_record, rows_frame
from void_pipeline.lib.ingest.repo_car import read_repo_car
from void_pipeline.lib.ingest.resilience import ResilientHttp
from void_pipeline.lib.ingest.threads import AncestorFetcher, PostCache, build_thread_context, own_posts_from_rows
from void_pipeline.lib.layout import REPO_ROOT, DataLayout, default_agent_name
from void_pipeline.testworld.corpus import COLLECTIONS, CorpusSpec, generate
from void_pipeline.testworld.devnet import Devnet
from void_pipeline.testworld.fault_proxy import FaultPlan, FaultProxy
from void_pipeline.testworld.seeding import seed_corpus

PAUSE_S = 1.0  # the original exporter's sleep between listRecords pages


def original_method(pds_url: str, appview_url: str, did: str, pages: int, replies_wanted: int) -> dict[str, float]:
    """Faithful re-implementation of the original scripts, on a subset; returns per-unit costs."""
    client = httpx.Client(timeout=60)
    requests = 0
    cursor = None
    replies: list[dict[str, str]] = []
    started = time.monotonic()
    for _ in range(pages):
        params: dict[str, str | int] = {"repo": did, "collection": "app.bsky.feed.post", "limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"{pds_url}/xrpc/com.atproto.repo.listRecords", params=params).json()
        requests += 1
        for record in page["records"]:
            reply = record["value"].get("reply")
            if reply:
                replies.append({"parent": reply["parent"]["uri"], "root": reply["root"]["uri"]})
        cursor = page.get("cursor")
        time.sleep(PAUSE_S)
    listing_s = time.monotonic() - started
    started = time.monotonic()
    sample = replies[:replies_wanted]
    for reply in sample:
        for uri in (reply["parent"], reply["root"]):
            client.get(f"{appview_url}/xrpc/app.bsky.feed.getPostThread", params={"uri": uri})
            requests += 1
    threads_s = time.monotonic() - started
    return {
        "s_per_page": listing_s / pages,
        "s_per_reply": threads_s / max(1, len(sample)),
        "pages": pages,
        "replies": len(sample),
    }


def cpu_split(data: Path, did: str, appview_url: str, plc_url: str) -> dict[str, float]:
    """The exporter's CPU stages timed one by one on its own output (no network: the CAR is the one it downloaded,
    the thread context is rebuilt from its post cache): CAR walk, record validation, parquet, thread building."""
    ingest = DataLayout(data).agent(default_agent_name(did)).ingest
    car = max(ingest.cars.glob("*.car"), key=lambda path: path.stat().st_size).read_bytes()
    seconds: dict[str, float] = {}
    started = time.process_time()
    walk = read_repo_car(car, expected_did=did)
    seconds["CAR walk"] = time.process_time() - started
    started = time.process_time()
    rows = [normalise_record(did, r.collection, r.rkey, r.cid, r.value) for r in walk.records]
    seconds["validation"] = time.process_time() - started
    kept = [row for row in rows if not isinstance(row, Rejection)]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.process_time()
        frame = rows_frame(kept)
        write_parquet_atomic(frame, Path(tmp) / "records.parquet")
        seconds["parquet"] = time.process_time() - started
    posts = frame.filter(pl.col("collection") == POST)
    with ResilientHttp() as http:
        cache = PostCache(ingest.post_cache)
        fetcher = AncestorFetcher(http, appview_url, IdentityResolver(http, plc_url), cache, log=lambda m: None)
        started = time.process_time()
        build_thread_context(
            posts.filter(pl.col("reply_parent_uri").is_not_null()), own_posts_from_rows(posts, None), fetcher
        )
        seconds["thread building"] = time.process_time() - started
        if http.stats.requests:
            print(f"warning: rebuilding thread context made {http.stats.requests} requests (the cache was not warm)")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agent-posts", type=int, default=50_000)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--original-pages", type=int, default=5)
    parser.add_argument("--original-replies", type=int, default=200)
    args = parser.parse_args()
    latency = args.latency_ms / 1000

    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp, Devnet(Path(tmp) / "devnet") as info:
        assert info.appview_url
        corpus = generate(CorpusSpec(agent_posts=args.agent_posts))
        seeded = seed_corpus(info, corpus, progress=lambda m: None)
        agent = seeded.accounts[corpus.agent.handle]
        print(f"seeded {seeded.records_written:,} records ({args.agent_posts:,} agent posts) in {seeded.seconds:.0f}s")
        pds_plan = FaultPlan(latency_s=latency, rate_limit=10, rate_window_s=1.0)
        appview_plan = FaultPlan(latency_s=latency, rate_limit=50, rate_window_s=1.0)
        with FaultProxy(agent.pds_url, pds_plan) as pds, FaultProxy(info.appview_url, appview_plan) as appview:
            summary_path = Path(tmp) / "summary.json"
            started = time.monotonic()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "void_pipeline",
                    "export",
                    agent.did,
                    "--out",
                    str(Path(tmp) / "data"),
                    "--pds-url",
                    pds.url,
                    "--appview-url",
                    appview.url,
                    "--plc-url",
                    info.plc_url,
                    "--pds-rps",
                    "10",
                    "--appview-rps",
                    "50",
                    "--summary-json",
                    str(summary_path),
                ],
                env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
                check=True,
                capture_output=True,
            )
            ours_s = time.monotonic() - started
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            peak_rss_mb = usage.ru_maxrss / 1024
            ours_cpu_s = usage.ru_utime + usage.ru_stime
            split = cpu_split(Path(tmp) / "data", agent.did, appview.url, info.plc_url)
            ours = json.loads(summary_path.read_text())
            violations = pds.stats.violations + appview.stats.violations
            original = original_method(pds.url, appview.url, agent.did, args.original_pages, args.original_replies)

    records, replies = ours["records"], ours["replies"]
    ours_requests = ours["http"]["requests"]
    pages_total = sum(-(-n // 100) for n in (seeded.live_counts().get((agent.did, c), 0) for c in COLLECTIONS))
    original_requests = pages_total + 2 * replies
    original_s = pages_total * original["s_per_page"] + replies * original["s_per_reply"]
    print(
        f"\ncorpus: {records:,} records in the agent's repo, {replies:,} replies; latency {args.latency_ms:.0f} ms/request;"
        f" limits PDS 10/s, AppView 50/s"
    )
    print(
        f"original method measured on {original['pages']} pages and {original['replies']} replies, "
        f"extrapolated linearly to {pages_total:,} pages and {replies:,} replies\n"
    )
    print(f"{'':<22}{'requests':>12}{'req / 1k records':>18}{'wall time':>14}")
    print(
        f"{'original method':<22}{original_requests:>12,}{1000 * original_requests / records:>18.1f}"
        f"{original_s:>13,.0f}s"
    )
    print(f"{'void-pipeline export':<22}{ours_requests:>12,}{1000 * ours_requests / records:>18.1f}{ours_s:>13,.1f}s")
    print(f"\nratio: {original_requests / ours_requests:.0f}x fewer requests, {original_s / ours_s:.0f}x faster")
    print(f"exporter peak RSS: {peak_rss_mb:,.0f} MB; rate-limit violations seen by the proxies: {violations}")
    print(f"ours, in detail: {ours['http']}; threads: {ours['threads']}")
    print(
        f"\nexporter CPU (user + sys): {ours_cpu_s:.1f} s of {ours_s:.1f} s wall; the rest is waiting on the network "
        "and the rate limits"
    )
    print("CPU by stage, each rerun alone on the exporter's own output (CPU seconds):")
    for stage, cpu_s in split.items():
        print(f"  {stage:<18}{cpu_s:>8.2f} s  ({records / cpu_s:>10,.0f} records/s)")


if __name__ == "__main__":
    main()
