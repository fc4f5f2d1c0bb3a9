"""Guarded process groups: everything a stage starts dies with it or with whoever started it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from void_pipeline.lib.layout import REPO_ROOT
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


def start_guarded(tree: str, marker: Path, grace_s: float | None = None) -> subprocess.Popen[str]:
    """A Python process (a Pipes child's stand-in) that starts ``tree`` under the guard; returns once it is up."""
    grace = f", grace_s={grace_s}" if grace_s is not None else ""
    starter = (
        "import subprocess, time; from void_pipeline.lib.processes import spawn_group; "
        f"g = spawn_group(['bash', '-c', {tree!r}], stdout=subprocess.PIPE, text=True{grace}); "
        "print(g.stdout.readline().strip(), flush=True); time.sleep(300)"
    )
    env = {**os.environ, "VOID_TEST_TREE": str(marker), "PYTHONPATH": str(REPO_ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", starter], env=env, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
    return parent


def test_a_killed_parent_takes_the_tree_with_it(tmp_path: Path) -> None:
    """SIGKILL of the process that started the tree (a Pipes child killed with its run): nothing survives."""
    parent = start_guarded(TREE, tmp_path)
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


# Ignores SIGTERM (every child inherits that), forks a short-lived child every few ms, and leaves a grandchild in a
# session of its own: what the guard stops is still being born while it stops it.
FORKING_TREE = "trap '' TERM; setsid sleep 300 & echo ready; while :; do (sleep 0.3 &); sleep 0.002; done"


def test_a_forking_tree_that_ignores_sigterm_dies_with_its_killed_starter(tmp_path: Path) -> None:
    """The parent-death signal and the watcher's SIGTERM land together while the tree forks: the guard still ends
    with SIGKILL sweeps that leave nothing (before the fix a process vanishing mid-scan cut its stop short)."""
    for trial in range(4):
        marker = tmp_path / str(trial)
        parent = start_guarded(FORKING_TREE, marker, grace_s=0.5)
        assert wait_until(lambda: len(sleepers(marker)) >= 4, 5)  # noqa: B023 - the loop waits here
        parent.kill()
        parent.wait()
        assert wait_until(lambda: not sleepers(marker), 15), f"trial {trial}: {sleepers(marker)}"  # noqa: B023


def test_the_guard_reports_a_bad_grace_and_a_missing_command() -> None:
    guard = [sys.executable, "-m", "void_pipeline.lib.processes"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    bad = subprocess.run([*guard, "--grace", "soon", "--", "true"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--grace SECONDS" in bad.stderr
    missing = subprocess.run([*guard, "--", "/nonexistent/program"], env=env, capture_output=True, text=True)
    assert missing.returncode == 127 and "cannot start /nonexistent/program" in missing.stderr
