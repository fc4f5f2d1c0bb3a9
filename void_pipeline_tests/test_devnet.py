"""The devnet: real PLC and PDS processes on loopback, started and stopped cleanly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from void_pipeline.lib.devnet import STATE_FILE, Devnet, DevnetError, DevnetInfo, PdsLayout, pid_alive
from void_pipeline.lib.paths import REPO_ROOT


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


def test_devnet_starts_and_stops_with_no_process_left_behind(tmp_path: Path) -> None:
    world = Devnet(tmp_path / "state", layout=(PdsLayout("solo", ".solo.test"),))
    info = world.start()
    pids = [p.pid for p in info.processes()]
    assert all(pid_alive(pid) for pid in pids)
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


def test_services_listen_on_loopback_only(devnet: DevnetInfo) -> None:
    loopback_v4 = "0100007F"  # 127.0.0.1, little-endian hex as the kernel prints it
    for service in devnet.processes():
        assert listening_addresses(service.port) == {loopback_v4}, service.name


def test_a_port_in_use_makes_the_service_take_another(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        with Devnet(tmp_path / "state", layout=(PdsLayout("solo", ".solo.test"),), plc_port=busy) as info:
            assert info.plc.port != busy
            assert httpx.get(f"{info.plc.url}/_health").status_code == 200


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


def test_cli_up_status_down_leaves_nothing_running(tmp_path: Path) -> None:
    state = tmp_path / "cli-state"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "void_pipeline", "--state-dir", str(state), "devnet", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )

    up = cli("up")
    assert up.returncode == 0, up.stderr
    info = DevnetInfo.load(state)
    assert oct((state / STATE_FILE).stat().st_mode & 0o777) == "0o600"
    try:
        status = cli("status")
        assert status.returncode == 0 and info.plc.url in status.stdout
        as_json = json.loads(cli("status", "--json").stdout)
        assert as_json["plc_url"] == info.plc_url and as_json["running"] is True
        assert {p["url"] for p in as_json["pds"].values()} == set(info.pds_urls)
        for shown in (status.stdout, up.stdout, json.dumps(as_json)):
            assert info.admin_password not in shown and info.account_secret not in shown
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p.pid) for p in info.processes())
    assert cli("status").returncode == 1  # no state left: says how to start one
