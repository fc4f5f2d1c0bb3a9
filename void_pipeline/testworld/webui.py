"""The Dagster web UI and its daemon on loopback, as `make ui` starts them (`dg dev` over the project), for
the browser test: under the process guard (void_pipeline.lib.processes), so stopping it stops every process it
started — code server, webserver, daemon, run workers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.processes import descendants, pid_alive, spawn_group, stop_group
from void_pipeline.testworld.devnet import free_port

LOCAL_INSTANCE = REPO_ROOT / "deploy" / "dagster.local.yaml"


class WebUIError(RuntimeError):
    pass


@dataclass
class WebUI:
    url: str
    home: Path
    log: Path
    guard: subprocess.Popen[Any]

    def processes(self) -> list[int]:
        """Every live process below the guard."""
        return [pid for pid in descendants(self.guard.pid) if pid_alive(pid)]

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def prepare_home(home: Path) -> Path:
    """A fresh DAGSTER_HOME with the demo's instance settings (what `make ui` copies there)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LOCAL_INSTANCE, home / "dagster.yaml")
    return home


def start(home: Path, env: Mapping[str, str], log: Path, timeout_s: float = 180.0) -> WebUI:
    """`dg dev` on a free loopback port; returns once the webserver answers /server_info."""
    port = free_port()
    # `dg dev` over the project (pyproject's [tool.dg]), from this interpreter's environment, as `make ui` runs it
    bin_dir = str(Path(sys.executable).parent)
    command = [str(Path(bin_dir) / "dg"), "dev", "-h", "127.0.0.1", "-p", str(port)]
    path = os.pathsep.join([bin_dir, env.get("PATH", "")])
    with log.open("ab") as out:
        guard = spawn_group(
            command,
            cwd=REPO_ROOT,
            env={**env, "DAGSTER_HOME": str(home), "PATH": path},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ui = WebUI(f"http://127.0.0.1:{port}", home, log, guard)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if guard.poll() is not None:
            raise WebUIError(f"dagster dev exited with {guard.returncode}:\n{ui.log_tail()}")
        try:
            if httpx.get(f"{ui.url}/server_info", timeout=5).status_code == 200:
                return ui
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop(ui)
    raise WebUIError(f"the webserver did not answer on {ui.url} within {timeout_s:.0f} s:\n{ui.log_tail()}")


def stop(ui: WebUI) -> list[int]:
    """Stop the guard's whole group; returns the pids that outlived it (none, when all is well)."""
    before = ui.processes()
    stop_group(ui.guard)
    return [pid for pid in before if pid_alive(pid)]


@contextmanager
def running(home: Path, env: Mapping[str, str], log: Path) -> Iterator[WebUI]:
    ui = start(home, env, log)
    try:
        yield ui
    finally:
        leftovers = stop(ui)
    if leftovers:
        raise WebUIError(f"processes of the web UI outlived it: {leftovers}")
