"""Guarded process groups: everything a stage starts dies with it or with whoever started it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from void_pipeline.lib.paths import REPO_ROOT
from void_pipeline.lib.processes import pid_alive, spawn_group, stop_group

# A tree like axolotl's: a launcher, its children, a grandchild that leaves for a session of its own.
TREE = "sleep 300 & setsid sleep 300 & bash -c 'sleep 300; true' & echo ready; wait"


def sleepers(marker: Path) -> list[int]:
    """Processes of the tree (they inherit the marker variable)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes()
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if f"VOID_TEST_TREE={marker}".encode() in environ and state != "Z":
                found.append(int(proc.name))
    return found


def wait_until(condition, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def test_stopping_the_guard_stops_the_whole_tree(tmp_path: Path) -> None:
    env = {**os.environ, "VOID_TEST_TREE": str(tmp_path)}
    guard = spawn_group(["bash", "-c", TREE], env=env, stdout=subprocess.PIPE, text=True)
    assert guard.stdout is not None and guard.stdout.readline().strip() == "ready"
    assert wait_until(lambda: len(sleepers(tmp_path)) >= 4, 5)
    assert stop_group(guard) != 0
    assert wait_until(lambda: not sleepers(tmp_path), 5), sleepers(tmp_path)


def test_a_killed_parent_takes_the_tree_with_it(tmp_path: Path) -> None:
    """SIGKILL of the process that started the tree (a Pipes child killed with its run): nothing survives."""
    starter = (
        "import sys, subprocess, time; from void_pipeline.lib.processes import spawn_group; "
        f"g = spawn_group(['bash', '-c', {TREE!r}], stdout=subprocess.PIPE, text=True); "
        "print(g.stdout.readline().strip(), flush=True); time.sleep(300)"
    )
    env = {**os.environ, "VOID_TEST_TREE": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", starter], env=env, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
    tree = sleepers(tmp_path)
    assert len(tree) >= 4
    parent.kill()
    parent.wait()
    assert wait_until(lambda: not sleepers(tmp_path), 15), sleepers(tmp_path)
    assert not any(pid_alive(pid) for pid in tree)


def test_a_command_that_ends_by_itself_leaves_no_straggler(tmp_path: Path) -> None:
    env = {**os.environ, "VOID_TEST_TREE": str(tmp_path)}
    guard = spawn_group(["bash", "-c", "sleep 300 & exit 3"], env=env)
    assert guard.wait(timeout=30) == 3  # the command's own exit code
    assert not sleepers(tmp_path)
