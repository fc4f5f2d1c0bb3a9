"""Live ingestion through the real Dagster daemon: agent_repo_sensor follows the devnet PDS's firehose, and new posts
land in raw_records through ordinary runs of the asset; a daemon killed and started again resumes from the cursor
the instance kept, without losing or duplicating anything."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from void_pipeline.lib.ingest.live import read_changes
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.processes import spawn_group, stop_group
from void_pipeline.testworld.corpus import MEMORY, POST, CorpusSpec, generate
from void_pipeline.testworld.devnet import Devnet, DevnetInfo
from void_pipeline.testworld.seeding import SeedResult, seed_corpus
from void_pipeline_tests.support.ingest import create, post, write
from void_pipeline_tests.support.world import agent_ingest

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

TICK_S = 3  # the sensor's interval in this test (30 s by default)
SENSOR = "agent_repo_sensor"


@dataclass
class World:
    info: DevnetInfo
    seeded: SeedResult
    handle: str
    env: dict[str, str]
    data: Path
    home: Path

    def records(self) -> pl.DataFrame:
        return pl.read_parquet(agent_ingest(self.data, "live").records(POST))

    def post(self, text: str) -> str:
        write(self.info, self.seeded, self.handle, [create(POST, post(text, len(text)))])
        return text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    corpus = generate(CorpusSpec(seed=31, agent_posts=40, other_accounts=4, deleted_parent_share=0.0))
    root = tmp_path_factory.mktemp("live")
    with Devnet(root / "devnet") as info:
        seeded = seed_corpus(info, corpus, progress=lambda m: None)
        home, data = root / "dagster_home", root / "data"
        home.mkdir()
        shutil.copyfile(REPO_ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("VOID_", "DAGSTER_"))}
        env = {
            **clean,
            "PYTHONPATH": str(REPO_ROOT),
            "DAGSTER_HOME": str(home),
            "VOID_PIPELINE_DATA": str(data),
            "VOID_ACTOR": corpus.agent.handle,
            "VOID_AGENT": "live",
            "VOID_PLC_URL": info.plc_url,
            "VOID_APPVIEW_URL": info.appview_url or "",
            "VOID_LIVE_INTERVAL_S": str(TICK_S),
            "VOID_COLLECTIONS": f"{POST},{MEMORY}",  # two partitions: the catch-up is two runs, not four
        }
        yield World(info, seeded, corpus.agent.handle, env, data, home)


def dagster(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dagster", *args],
        env=world.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def start_daemon(world: World) -> subprocess.Popen[bytes]:
    log = (world.home / "daemon.log").open("ab")
    daemon = Path(sys.executable).with_name("dagster-daemon")
    return spawn_group(
        [str(daemon), "run", "-w", "workspace.yaml"], env=world.env, cwd=REPO_ROOT, stdout=log, stderr=log
    )


def kill_daemon(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL, as a crash would: nothing gets to save state on the way out. The guard's group goes with it."""
    os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
    process.wait(timeout=30)


def sensor_state(instance: dg.DagsterInstance) -> dg.InstigatorState:
    states = [s for s in instance.all_instigator_state() if s.name == SENSOR]
    assert len(states) == 1, states
    return states[0]


def sensor_ticks(instance: dg.DagsterInstance) -> list[dg.InstigatorTick]:
    state = sensor_state(instance)
    return sorted(instance.get_ticks(state.instigator_origin_id, state.selector_id), key=lambda t: t.timestamp)


def saved_seq(instance: dg.DagsterInstance) -> int:
    """The firehose seq the instance keeps for the sensor (what a restarted daemon reads from)."""
    cursor = json.loads(sensor_state(instance).instigator_data.cursor or "{}")
    return int(cursor["seq"])


def firehose_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"void/trigger": "firehose"})))


def wait_for(what: str, condition: object, timeout_s: float, world: World) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(1.0)
    log = (world.home / "daemon.log").read_text()[-4000:] if (world.home / "daemon.log").exists() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n--- daemon log ---\n{log}")


def runs_settled(instance: dg.DagsterInstance) -> bool:
    runs = firehose_runs(instance)
    return bool(runs) and all(r.is_finished for r in runs)


def test_new_posts_reach_raw_records_within_two_ticks_and_a_killed_daemon_resumes_from_the_cursor(
    world: World,
) -> None:
    # the first export, as an operator does it once; the sensor follows from there
    dagster(world, "asset", "materialize", "-m", "void_pipeline.definitions", "--select", "raw_records",
            "--partition", POST)  # fmt: skip
    first = world.records()
    dagster(world, "sensor", "start", SENSOR, "-w", "workspace.yaml")
    dagster(world, "schedule", "start", "daily_ingest", "-w", "workspace.yaml")  # switched on, as in the UI
    daemon = start_daemon(world)
    try:
        with dg.DagsterInstance.from_config(str(world.home)) as instance:
            # tick 1 has no cursor: every collection is caught up (incrementally), keyed by the repo's revision
            wait_for("the first tick's catch-up runs", lambda: runs_settled(instance), 180, world)
            assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in firehose_runs(instance))
            caught_up = len(firehose_runs(instance))

            head = saved_seq(instance)  # caught up: the last event the firehose holds
            texts = [f"live post {n}, after the first export" for n in range(2)]
            # one commit (one firehose event) whatever the machine's speed: a tick between two commits makes two runs
            write(world.info, world.seeded, world.handle, [create(POST, post(text, len(text))) for text in texts])
            wait_for(
                "the new posts in raw_records",
                lambda: set(texts) <= set(world.records()["text"].to_list()),
                120,
                world,
            )
            runs = firehose_runs(instance)
            assert len(runs) == caught_up + 1 and runs[0].tags["dagster/partition"] == POST
            # the first tick that read past the commit asked for the run (told by the cursor each tick saved)
            read_it = [t for t in sensor_ticks(instance) if t.cursor and json.loads(t.cursor)["seq"] > head]
            assert read_it and runs[0].run_id in read_it[0].run_ids, [(t.cursor, t.run_ids) for t in read_it]
            cursor_before = saved_seq(instance)
            wait_for("the runs to finish", lambda: runs_settled(instance), 120, world)  # the kill is the daemon's

        kill_daemon(daemon)
        later = [world.post(f"live post {n}, while the daemon was down") for n in range(2, 4)]
        daemon = start_daemon(world)
        with dg.DagsterInstance.from_config(str(world.home)) as instance:
            wait_for("the posts made while the daemon was down", lambda: set(later) <= set(world.records()["text"].to_list()), 120, world)  # fmt: skip
            wait_for("the runs to finish", lambda: runs_settled(instance), 120, world)
            runs = firehose_runs(instance)
            keys = [r.tags.get("dagster/run_key") for r in runs]
            assert len(keys) == len(set(keys)), f"a run was launched twice for one revision: {keys}"
            assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
            assert saved_seq(instance) > cursor_before, "the cursor moved on"
            # schedules keep their state: the one switched on before the kill is on, the other is still off
            schedules = {s.name: s.status.value for s in instance.all_instigator_state() if s.name != SENSOR}
            assert schedules.get("daily_ingest") == "RUNNING", schedules
            assert schedules.get("retrain_on_growth", "STOPPED") == "STOPPED", schedules

            # two runs of one partition through the queue (as the schedule, the sensor and the UI launch them):
            # the instance's limit of one run per partition key makes the second wait for the first
            tags = json.dumps({"dagster/partition": POST, "void/trigger": "queued"})
            for _ in range(2):
                dagster(world, "job", "launch", "-j", "ingest_job", "-w", "workspace.yaml", "--tags", tags)

            def queued() -> list[dg.DagsterRun]:
                return list(instance.get_runs(filters=dg.RunsFilter(tags={"void/trigger": "queued"})))

            wait_for("the queued runs", lambda: len(queued()) == 2 and all(r.is_finished for r in queued()), 180, world)
            records = [instance.get_run_record_by_id(r.run_id) for r in queued()]
            assert all(r is not None and r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
            spans = sorted((r.start_time, r.end_time) for r in records if r is not None)
            assert spans[0][1] is not None and spans[1][0] is not None and spans[0][1] <= spans[1][0], spans
    finally:
        stop_group(daemon)

    table = world.records()
    assert table["uri"].n_unique() == table.height, "no record twice"
    assert table.height == first.height + 4, "every post made live is there, each once"


def test_reading_from_a_saved_cursor_replays_what_followed_it(world: World) -> None:
    account = world.seeded.accounts[world.handle]
    start = read_changes(account.pds_url, account.did, 0, idle_s=1.0)  # from the oldest event the PDS keeps
    assert start.caught_up and start.cursor is not None
    world.post("a post after the cursor")
    replay = read_changes(account.pds_url, account.did, start.cursor, idle_s=1.0)
    assert replay.caught_up and replay.commits == 1 and set(replay.collections) == {POST}
    assert replay.cursor is not None and replay.cursor > start.cursor
    again = read_changes(account.pds_url, account.did, replay.cursor, idle_s=1.0)
    assert again.commits == 0 and again.cursor == replay.cursor, "nothing twice"


def test_an_unreachable_pds_is_an_error_not_silence() -> None:
    changes = read_changes("http://127.0.0.1:9", "did:plc:nobody", 5, idle_s=1.0, budget_s=6.0)
    assert changes.stopped_by.startswith("error") and not changes.caught_up
    assert changes.cursor == 5, "the cursor does not move past what was not read"
