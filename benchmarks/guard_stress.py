"""The process guard under stress: a guarded tree that ignores SIGTERM and keeps forking, its starter SIGKILLed.

Each trial starts a Python process that starts the tree under ``spawn_group``, kills that starter with SIGKILL (the
guard gets the parent-death signal and its watcher's SIGTERM, both at once), and counts the tree's processes still
alive once the guard has had its grace period and its SIGKILL sweeps. A survivor is a trial lost.

    python benchmarks/guard_stress.py --trials 12
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Ignores SIGTERM (inherited by every child it forks), forks a short-lived child every few milliseconds, and leaves
# a grandchild in a session of its own: the guard must find processes born while it stops the group.
FORKING_TREE = "trap '' TERM; setsid sleep 300 & echo ready; while :; do (sleep 0.3 &) ; sleep 0.002; done"


def tree_processes(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if f"VOID_GUARD_STRESS={marker}".encode() in environ and state != "Z":
            found.append(int(proc.name))
    return found


def trial(grace_s: float, settle_s: float) -> list[int]:
    """One starter killed; the pids of its tree still alive after the guard's stop (``[]``: nothing survived)."""
    marker = tempfile.mkdtemp(prefix="guard-stress-")
    starter = (
        "import subprocess, time; from void_pipeline.lib.processes import spawn_group; "
        f"g = spawn_group(['bash', '-c', {FORKING_TREE!r}], stdout=subprocess.PIPE, text=True, grace_s={grace_s}); "
        "print(g.stdout.readline().strip(), flush=True); time.sleep(300)"
    )
    env = {**os.environ, "VOID_GUARD_STRESS": marker, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", starter], env=env, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
    time.sleep(0.2)  # let the fork loop run
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + grace_s + settle_s
    while time.monotonic() < deadline and tree_processes(marker):
        time.sleep(0.2)
    survivors = tree_processes(marker)
    for pid in survivors:  # clean up after a lost trial
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return survivors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--grace", type=float, default=1.0, help="the guard's SIGTERM grace period, seconds")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds allowed beyond the grace")
    args = parser.parse_args()
    lost = 0
    for number in range(1, args.trials + 1):
        survivors = trial(args.grace, args.settle)
        lost += bool(survivors)
        print(f"trial {number:2d}: {'survived: ' + str(len(survivors)) + ' processes' if survivors else 'clean'}")
    print(f"{lost} of {args.trials} trials left processes running")


if __name__ == "__main__":
    main()
