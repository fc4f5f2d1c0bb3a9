"""Devnet start-up and seeding rate at scale (numbers for the issue note; never part of the test run).

    python benchmarks/seed_bench.py --agent-posts 50000

Prints: devnet cold start, corpus generation time, seeding wall time and rate (records/s and agent posts/s),
and the ratio of the measured seeding time to the 3-minute goal for 50k agent posts.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from void_pipeline.testworld.corpus import CorpusSpec, generate
from void_pipeline.testworld.devnet import Devnet
from void_pipeline.testworld.seeding import seed_corpus

GOAL_SECONDS = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agent-posts", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=6)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="seed-bench-") as tmp:
        started = time.monotonic()
        with Devnet(Path(tmp) / "devnet") as info:
            cold_start = time.monotonic() - started
            t0 = time.monotonic()
            corpus = generate(CorpusSpec(agent_posts=args.agent_posts))
            gen_s = time.monotonic() - t0
            result = seed_corpus(info, corpus, workers=args.workers, progress=lambda m: None)
        agent_posts = int(
            result.manifest.filter(
                result.manifest["is_agent"] & (result.manifest["collection"] == "app.bsky.feed.post")
            ).height
        )
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"devnet cold start (PLC + 2 PDS, ready)  {cold_start:8.1f} s")
        print(f"corpus generation                      {gen_s:8.1f} s  ({len(corpus.records):,} records)")
        print(f"seeding wall time                      {result.seconds:8.1f} s")
        print(f"seeding rate, all records               {result.records_per_second:8.0f} records/s")
        print(f"seeding rate, agent posts               {agent_posts / result.seconds:8.0f} posts/s")
        scaled = result.seconds * 50_000 / max(agent_posts, 1)
        print(
            f"time for 50k agent posts (this shape)  {scaled:8.1f} s; goal {GOAL_SECONDS:.0f} s "
            f"-> {GOAL_SECONDS / scaled:.2f}x of the goal's budget"
        )
        print(f"seeder peak RSS                         {peak_mb:8.0f} MB")


if __name__ == "__main__":
    main()
