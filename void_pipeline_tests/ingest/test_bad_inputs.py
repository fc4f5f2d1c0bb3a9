"""The export CLI and raw_records against bad input and damaged local state: a clear message, nothing lost."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.seeding import SeedResult
from void_pipeline_tests.support.cli import one_line_error
from void_pipeline_tests.support.expected import expected_records
from void_pipeline_tests.support.world import Agent, agent_ingest

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

MEMORY = "stream.thought.memory"


def export(devnet: DevnetInfo, actor: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert devnet.appview_url
    command = [sys.executable, "-m", "void_pipeline", "export", actor, "--out", str(out), "--agent", "void"]
    command += ["--plc-url", devnet.plc_url, "--appview-url", devnet.appview_url, *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_arguments_that_cannot_work_are_refused_at_once(devnet: DevnetInfo, agent: Agent, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    escaped = one_line_error(export(devnet, agent.did, out, "--collections", "../../../../escaped"))
    assert "'../../../../escaped' is not a valid collection NSID" in escaped
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # nothing written, inside --out or out of it
    a_file = tmp_path / "out.txt"
    a_file.write_text("mine")
    assert "is a file, not a folder" in one_line_error(export(devnet, agent.did, a_file))
    assert "is not writable" in one_line_error(export(devnet, agent.did, Path("/sys/void-pipeline-test")))
    # refused before any lookup (DNS retries took 35 s): the PLC and the AppView given are a socket that records
    # every connection, and none comes
    with socket.create_server(("127.0.0.1", 0)) as listener:
        services = f"http://127.0.0.1:{listener.getsockname()[1]}"
        command = [sys.executable, "-m", "void_pipeline", "export", "not a handle!", "--out", str(tmp_path)]
        command += ["--agent", "void", "--plc-url", services, "--appview-url", services]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert "'not a handle!' is not a valid handle" in one_line_error(refused)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_a_collection_the_repo_never_held_warns_with_the_ones_it_holds(
    devnet: DevnetInfo, agent: Agent, seeded: SeedResult, tmp_path: Path
) -> None:
    result = export(devnet, agent.did, tmp_path, "--collections", f"{MEMORY},app.bsky.feed.postt")
    assert result.returncode == 0, result.stderr
    assert "warning: the repo holds no app.bsky.feed.postt records: is the name right? It holds: " in result.stdout
    assert f"{POST}, " in result.stdout.split("It holds: ")[1]
    frame = pl.read_parquet(agent_ingest(tmp_path).records(MEMORY))
    assert frame.height == len(expected_records(seeded, agent.did, MEMORY))


def test_raw_records_warns_about_a_collection_typo_from_void_collections(
    devnet: DevnetInfo, agent: Agent, tmp_path: Path
) -> None:
    assert devnet.appview_url
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "VOID_PIPELINE_DATA": str(tmp_path / "data"),
        "VOID_COLLECTIONS": "app.bsky.feed.postt",
        "VOID_ACTOR": agent.did,
        "VOID_PLC_URL": devnet.plc_url,
        "VOID_APPVIEW_URL": devnet.appview_url,
    }
    (tmp_path / "home").mkdir()
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "void_pipeline.definitions"]
    command += ["--select", "raw_records", "--partition", "app.bsky.feed.postt"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the repo holds no app.bsky.feed.postt records: is the name right? It holds: " in result.stderr


def test_damaged_local_state_names_the_file_and_full_refresh_rebuilds(
    devnet: DevnetInfo, agent: Agent, seeded: SeedResult, tmp_path: Path
) -> None:
    paths = agent_ingest(tmp_path)
    first = export(devnet, agent.did, tmp_path, "--collections", f"{POST},{MEMORY}")
    assert first.returncode == 0, first.stderr
    expected = {c: expected_records(seeded, agent.did, c) for c in (POST, MEMORY)}

    def exported(collection: str) -> dict[str, str]:
        frame = pl.read_parquet(paths.records(collection))
        return dict(zip(frame["uri"], frame["cid"], strict=True))

    # a truncated table: the error names it and the way out; a full refresh rebuilds it without reading it
    table = paths.records(POST)
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    error = one_line_error(export(devnet, agent.did, tmp_path, "--collections", POST))
    assert str(table) in error and "--full-refresh" in error
    assert export(devnet, agent.did, tmp_path, "--collections", POST, "--full-refresh").returncode == 0
    assert exported(POST) == expected[POST]

    # a broken state file: same
    paths.state(MEMORY).write_text('{"rev": "3l')
    error = one_line_error(export(devnet, agent.did, tmp_path, "--collections", MEMORY))
    assert str(paths.state(MEMORY)) in error and "not valid JSON" in error
    assert export(devnet, agent.did, tmp_path, "--collections", MEMORY, "--full-refresh").returncode == 0
    assert exported(MEMORY) == expected[MEMORY]

    # a broken listRecords checkpoint of an unfinished listing
    checkpoint = paths.listing(MEMORY) / "checkpoint.json"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\x00\x00")
    refused = export(devnet, agent.did, tmp_path, "--collections", MEMORY, "--method", "list_records")
    assert str(checkpoint) in one_line_error(refused)
    rebuilt = export(devnet, agent.did, tmp_path, "--collections", MEMORY, "--method", "list_records", "--full-refresh")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert exported(MEMORY) == expected[MEMORY] and not checkpoint.exists()

    # a post cache with bytes that are not UTF-8: only a cache, so the bad lines go with a warning
    cache = paths.post_cache
    lines = cache.read_bytes().splitlines(keepends=True)
    assert len(lines) > 10
    cache.write_bytes(b"".join(lines[:5]) + b"\xff\xfe\x00 not json\n" + b"".join(lines[5:]))
    again = export(devnet, agent.did, tmp_path, "--collections", POST)
    assert again.returncode == 0, again.stderr
    assert f"warning: post cache {cache}: 1 unreadable line(s) discarded, {len(lines)} posts kept" in again.stdout
    assert b"\xff" not in cache.read_bytes() and len(cache.read_bytes().splitlines()) >= len(lines)


HOLD = (
    "import sys, time; from pathlib import Path; from void_pipeline.lib.files import acquire_owner; "
    "lock = acquire_owner(Path(sys.argv[1]), 'exporting app.bsky.feed.post', 'x'); "
    "print('held', flush=True); time.sleep(120)"
)


def test_one_writer_per_collection_folder(devnet: DevnetInfo, agent: Agent, tmp_path: Path) -> None:
    lock = agent_ingest(tmp_path).writer_lock(POST)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        error = one_line_error(export(devnet, agent.did, tmp_path, "--collections", POST))
        assert f"the {POST} export is in use by pid {holder.pid}" in error
        assert not agent_ingest(tmp_path).records(POST).exists()
    finally:
        holder.kill()
        holder.wait()
    assert export(devnet, agent.did, tmp_path, "--collections", POST).returncode == 0  # its lock died with it
