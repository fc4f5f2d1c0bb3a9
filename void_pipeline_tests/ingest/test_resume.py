"""A killed export resumes: SIGKILL at random points mid-listing, then run to the end: nothing lost, nothing twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.testworld.corpus import COLLECTIONS, POST
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.fault_proxy import FaultPlan, FaultProxy
from void_pipeline.testworld.seeding import SeedResult
from void_pipeline_tests.support.expected import all_expected
from void_pipeline_tests.support.ingest import listing_progress
from void_pipeline_tests.support.world import Agent, agent_ingest

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

KILLS = 5


def test_sigkill_at_random_points_then_resume_loses_and_duplicates_nothing(
    agent: Agent, seeded: SeedResult, devnet: DevnetInfo, tmp_path: Path
) -> None:
    assert devnet.appview_url
    rng = random.Random(20261129)
    slow = FaultPlan(latency_s=0.2)  # every answer takes 200 ms: the export runs long enough to be cut often
    with FaultProxy(agent.pds_url, slow) as pds, FaultProxy(devnet.appview_url, slow) as appview:
        command = [
            sys.executable,
            "-m",
            "void_pipeline",
            "export",
            agent.did,
            "--method",
            "list_records",
            "--out",
            str(tmp_path),
            "--agent",
            "void",
            "--pds-url",
            pds.url,
            "--appview-url",
            appview.url,
            "--plc-url",
            devnet.plc_url,
            "--pds-rps",
            "1000",
            "--appview-rps",
            "1000",
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        paths = agent_ingest(tmp_path)
        killed_mid_listing, output, seen = 0, "", listing_progress(paths)
        for _ in range(4 * KILLS):
            if killed_mid_listing == KILLS:
                break
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # Kill only once the checkpoint shows a page this run listed, at a random moment after it: every kill
            # lands mid-listing, so each resume has a checkpoint to pick up.
            deadline = time.monotonic() + 120
            while process.poll() is None and listing_progress(paths) <= seen and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            if process.poll() is None and (pages := listing_progress(paths)) > seen:
                process.send_signal(signal.SIGKILL)
                killed_mid_listing += 1
                seen = pages
            output += process.communicate()[0]
        assert killed_mid_listing == KILLS
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert final.returncode == 0, final.stdout + final.stderr
        assert "resuming listRecords" in output + final.stdout  # a checkpoint was picked up, not started over

    expected = all_expected(seeded, agent.did)
    for collection in COLLECTIONS:
        frame = pl.read_parquet(paths.records(collection))
        assert frame.height == frame["uri"].n_unique(), f"duplicates in {collection}"
        assert dict(zip(frame["uri"], frame["cid"], strict=True)) == expected[collection], collection
        assert not paths.listing(collection).exists()  # finished listings are cleaned up
    context = pl.read_parquet(paths.thread_context)
    replies = pl.read_parquet(paths.records(POST)).filter(pl.col("reply_parent_uri").is_not_null())
    assert context.height == replies.height == context["uri"].n_unique()
    assert set(context["missing_reason"].drop_nulls().unique()) <= {"deleted"}
