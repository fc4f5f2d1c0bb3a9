"""The devnet: real PLC and PDS processes on loopback, started and stopped cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.processes import pid_alive
from void_pipeline.testworld.devnet import STATE_FILE, Devnet, DevnetError, DevnetInfo, PdsLayout


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


@pytest.mark.integration
def test_devnet_starts_beside_a_busy_port_and_stops_with_no_process_left_behind(tmp_path: Path) -> None:
    """One devnet for both: a service whose port is taken takes another; stopped, nothing of it is left."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        world = Devnet(tmp_path / "state", layout=(PdsLayout("solo", ".solo.test"),), plc_port=busy)
        info = world.start()
        pids = [p.pid for p in info.processes()]
        assert all(pid_alive(pid) for pid in pids)
        assert info.plc.port != busy
        assert httpx.get(f"{info.pds[0].url}/xrpc/_health").json()["version"]
        assert httpx.get(f"{info.plc.url}/_health").status_code == 200
        world.stop()
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(group_members(pid) for pid in pids)
    assert not (tmp_path / "state" / STATE_FILE).exists()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN state on ``port``, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.integration
def test_services_listen_on_loopback_only(devnet: DevnetInfo) -> None:
    loopback_v4 = "0100007F"  # 127.0.0.1, little-endian hex as the kernel prints it
    for service in devnet.processes():
        assert listening_addresses(service.port) == {loopback_v4}, service.name


@pytest.mark.integration
def test_a_failing_start_shows_the_launcher_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Node cannot even load its preload module: the error must name the cause from the launcher's log.
    monkeypatch.setenv("NODE_OPTIONS", "--import=/nonexistent/preload.mjs")
    world = Devnet(tmp_path / "state", layout=(PdsLayout("solo", ".solo.test"),))
    with pytest.raises(DevnetError) as failure:
        world.start()
    message = str(failure.value)
    assert "plc failed to start" in message
    assert "nonexistent/preload.mjs" in message
    assert not world._children


def devnet_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "void_pipeline.testworld", "--state-dir", str(state), "devnet", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, check=False)


@pytest.mark.integration
def test_up_never_wipes_a_folder_it_did_not_create(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    (exports / "ingest").mkdir(parents=True)
    (exports / "ingest" / "raw.parquet").write_bytes(b"a user's export")
    refused = devnet_cli(exports, "up")
    if (exports / STATE_FILE).exists():  # it started one after all: stop it before failing
        devnet_cli(exports, "down")
    assert refused.returncode == 1
    assert "refusing to use" in refused.stderr and "Traceback" not in refused.stderr
    assert (exports / "ingest" / "raw.parquet").read_bytes() == b"a user's export"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    assert "is a file" in devnet_cli(a_file, "up").stderr and a_file.read_text() == "keep me"


@pytest.mark.integration
def test_cli_up_status_down_agree_about_a_half_dead_devnet_and_leave_nothing_running(tmp_path: Path) -> None:
    """One devnet from the CLI: up, status (text and JSON, no secret shown); one PDS dies and status and up both say
    HALF-RUNNING naming it, up touching nothing; down stops the rest; status then says none runs."""
    state = tmp_path / "cli-state"
    up = devnet_cli(state, "up")
    assert up.returncode == 0, up.stderr
    info = DevnetInfo.load(state)
    assert oct((state / STATE_FILE).stat().st_mode & 0o777) == "0o600"
    try:
        status = devnet_cli(state, "status")
        assert status.returncode == 0 and info.plc.url in status.stdout
        as_json = json.loads(devnet_cli(state, "status", "--json").stdout)
        assert as_json["plc_url"] == info.plc_url and as_json["running"] is True
        assert {p["url"] for p in as_json["pds"].values()} == set(info.pds_urls)
        for shown in (status.stdout, up.stdout, json.dumps(as_json)):
            assert info.admin_password not in shown and info.account_secret not in shown

        dead, others = info.pds[0], [p for p in info.processes() if p != info.pds[0]]
        os.killpg(dead.pid, signal.SIGKILL)  # one PDS dies; the PLC and the others go on
        deadline = time.monotonic() + 10
        while pid_alive(dead.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        status, up = devnet_cli(state, "status"), devnet_cli(state, "up")
        assert status.returncode == 1 and up.returncode == 1
        for said in (status.stdout, up.stderr):
            assert f"HALF-RUNNING: {dead.name} died while plc, " in said, said
        assert f"(pid {dead.pid}, NOT RUNNING)" in status.stdout
        assert json.loads(devnet_cli(state, "status", "--json").stdout)["dead_services"] == [dead.name]
        assert all(pid_alive(p.pid) for p in others)  # up touched nothing
    finally:
        down = devnet_cli(state, "down")
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p.pid) for p in info.processes())
    assert devnet_cli(state, "status").returncode == 1  # no state left: says how to start one


def test_a_state_folder_of_an_earlier_version_is_recognised_by_its_contents(tmp_path: Path) -> None:
    from void_pipeline.testworld.devnet import MARKER_FILE, prepare_state_dir

    earlier = tmp_path / "devnet"  # what `devnet down` of a version without the marker left behind
    for name in ("logs", "pds-comind", "seed"):
        (earlier / name).mkdir(parents=True)
    prepare_state_dir(earlier)
    assert sorted(p.name for p in earlier.iterdir()) == [MARKER_FILE, "logs"]
    (earlier / "logs" / "plc.log").write_text("old log")
    prepare_state_dir(earlier)  # ours now: wiped again
    assert not (earlier / "logs" / "plc.log").exists()
    mixed = tmp_path / "mixed"
    (mixed / "logs").mkdir(parents=True)
    (mixed / "exports.parquet").write_bytes(b"a user's file")
    with pytest.raises(DevnetError, match="refusing to use"):
        prepare_state_dir(mixed)
    assert (mixed / "exports.parquet").exists()
