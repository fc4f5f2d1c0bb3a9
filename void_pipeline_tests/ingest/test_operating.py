"""Faults while operating, through Dagster itself: a run worker killed mid-materialization, and two runs of the same
partition at once. The PDS is reached through a proxy that answers slowly, so each run lasts long enough to be cut
or overlapped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from void_pipeline.defs.ingest.assets import raw_records, thread_context
from void_pipeline.lib.files import read_holder
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.testworld.corpus import POST
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.fault_proxy import FaultPlan, FaultProxy
from void_pipeline.testworld.seeding import SeedResult
from void_pipeline_tests.support.expected import all_expected
from void_pipeline_tests.support.ingest import listing_progress
from void_pipeline_tests.support.world import Agent, agent_ingest

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

LIST_RECORDS = json.dumps({"ops": {"raw_records": {"config": {"method": "list_records"}}}})


@contextmanager
def operated(
    devnet: DevnetInfo, agent: Agent, tmp_path: Path, latency_s: float
) -> Iterator[tuple[dict[str, str], Path]]:
    """A code location pointed at the devnet through a proxy that answers after ``latency_s``, with an instance of
    its own."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)):
        pass  # its SQLite storage created once: two processes creating it at the same moment race on the schema
    with FaultProxy(agent.pds_url, FaultPlan(latency_s=latency_s)) as pds:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("VOID_", "DAGSTER_"))}
        env = {
            **clean,
            "PYTHONPATH": str(REPO_ROOT),
            "DAGSTER_HOME": str(home),
            "VOID_PIPELINE_DATA": str(tmp_path / "data"),
            "VOID_ACTOR": agent.handle,
            "VOID_AGENT": "void",
            "VOID_PLC_URL": devnet.plc_url,
            "VOID_APPVIEW_URL": devnet.appview_url or "",
            "VOID_PDS_URL": pds.url,
        }
        yield env, tmp_path / "data"


def materialize(env: dict[str, str], select: str, partition: str | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "void_pipeline.definitions"]
    command += ["--select", select, *(["--partition", partition] if partition else [])]
    if select == "raw_records":
        command += ["--config-json", LIST_RECORDS]  # page by page: the run lasts, and a kill lands mid-listing
    return subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # the run worker and anything it started: killed together below
    )  # fmt: skip


def finished(process: subprocess.Popen[str], timeout_s: float = 300) -> tuple[int, str]:
    output = process.communicate(timeout=timeout_s)[0]
    return process.returncode, output


def test_a_run_worker_killed_mid_materialization_leaves_nothing_half_written_and_the_next_run_succeeds(
    devnet: DevnetInfo, devnet_endpoint: AtprotoEndpoint, agent: Agent, seeded: SeedResult, tmp_path: Path
) -> None:
    with operated(devnet, agent, tmp_path, latency_s=0.2) as (env, data):
        kill_then_run_again(env, data, devnet_endpoint, agent, seeded)


def downstream(endpoint: AtprotoEndpoint, data: Path) -> dg.ExecuteInProcessResult:
    """thread_context, what reads raw_records[post] next, over the same data folder (in this process)."""
    resources = {"endpoint": endpoint, "storage": PipelineStorage(root=str(data), agent="void")}
    return dg.materialize([raw_records, thread_context], selection=[thread_context.key], resources=resources,
                          raise_on_error=False)  # fmt: skip


def kill_then_run_again(
    env: dict[str, str], data: Path, endpoint: AtprotoEndpoint, agent: Agent, seeded: SeedResult
) -> None:
    paths = agent_ingest(data)
    worker = materialize(env, "raw_records", POST)
    while worker.poll() is None and listing_progress(paths) == 0:  # until it has listed a page
        time.sleep(0.05)
    assert worker.poll() is None, "the run ended before it could be killed: " + finished(worker)[1][-2000:]
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()

    assert not paths.records(POST).exists(), "a killed first export leaves no table, not part of one"
    assert not list(paths.root.rglob("*.tmp")), "no temporary file left where readers look"
    refused = downstream(endpoint, data)
    failures = " ".join(str(e.step_failure_data) for e in refused.get_step_failure_events())
    assert not refused.success and "raw_records[app.bsky.feed.post] has not been materialized" in failures

    code, output = finished(materialize(env, "raw_records", POST))
    assert code == 0, output[-3000:]
    assert "resuming listRecords" in output, "the next run picked up the killed one's checkpoint"
    table = pl.read_parquet(paths.records(POST))
    assert dict(zip(table["uri"], table["cid"], strict=True)) == all_expected(seeded, agent.did)[POST]
    assert downstream(endpoint, data).success

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": POST}))
        statuses = sorted(r.status.value for r in runs)
        event = instance.get_latest_materialization_event(dg.AssetKey("raw_records"))
    # the killed run stays as it was left (STARTED: nothing was alive to report its end); the next one succeeded
    assert statuses == ["STARTED", "SUCCESS"], statuses
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.metadata["dagster/row_count"].value == table.height


def test_two_runs_of_one_partition_at_once_one_exports_and_the_other_fails_naming_it(
    devnet: DevnetInfo, agent: Agent, seeded: SeedResult, tmp_path: Path
) -> None:
    with operated(devnet, agent, tmp_path, latency_s=0.2) as (env, data):
        first = materialize(env, "raw_records", POST)
        lock = agent_ingest(data).writer_lock(POST)
        while not read_holder(lock).get("pid"):  # until the first export holds the partition
            assert first.poll() is None, finished(first)[1][-2000:]
            time.sleep(0.05)
        holder = int(read_holder(lock)["pid"])
        os.kill(holder, signal.SIGSTOP)  # held still, whatever the machine's speed, while the second one tries
        try:
            second = finished(materialize(env, "raw_records", POST))
        finally:
            os.kill(holder, signal.SIGCONT)
        results = [finished(first), second]
    assert [code for code, _ in results] == [0, 1], "\n".join(out[-2000:] for _, out in results)
    refused = second[1]
    # the second says who holds the partition (pid, host, what it does, since when), and leaves its data alone
    assert "the app.bsky.feed.post export is in use by pid" in refused, refused[-3000:]
    assert "exporting app.bsky.feed.post" in refused
    table = pl.read_parquet(agent_ingest(data).records(POST))
    assert dict(zip(table["uri"], table["cid"], strict=True)) == all_expected(seeded, agent.did)[POST]
