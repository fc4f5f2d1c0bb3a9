"""Child processes that die with whoever started them: no trainer is left running after its run is gone.

Three pieces, each covering one way a run ends (stdlib only: this module also runs in the trainer environment):

- ``spawn_group(command)`` starts ``command`` under a small guard process (``python -m void_pipeline.lib.processes
  -- command``). The guard leads a process group of its own, becomes the subreaper of everything below it, and
  gets SIGTERM when its parent dies (Linux parent-death signal). On SIGTERM, SIGINT, SIGHUP or its parent's death it
  stops the whole group — axolotl, the accelerate launcher, the training process, data loader workers — SIGTERM
  first, SIGKILL after a grace period. When the command ends by itself, stragglers of the group are stopped too.
- ``exit_when_gone(pids)`` in a process started by another (a Pipes child): when any of ``pids`` is gone, or the
  process is orphaned, SIGTERM to itself, whose handler stops its group.
- ``bound_to_run_worker()`` in a Dagster step that runs in a process of its own (the multiprocess executor): the
  step process exits when the run worker is gone, instead of going on as an orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 10.0


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def watch(
    pids: Sequence[int],
    on_gone: Callable[[], None],
    interval_s: float = 0.5,
    stop: threading.Event | None = None,
) -> threading.Thread:
    """A daemon thread that calls ``on_gone`` once, as soon as one of ``pids`` has died or this process's
    parent changed (orphaned: reparented to init or a subreaper) — unless ``stop`` is set first."""
    parent = os.getppid()
    stop = stop or threading.Event()

    def loop() -> None:
        while os.getppid() == parent and all(pid_alive(pid) for pid in pids):
            if stop.wait(interval_s):
                return
        on_gone()

    thread = threading.Thread(target=loop, name="exit-when-gone", daemon=True)
    thread.start()
    return thread


def exit_when_gone(pids: Sequence[int] = ()) -> threading.Thread:
    """SIGTERM to this process when one of ``pids`` dies or it is orphaned; its handler stops what it started."""
    return watch(pids, lambda: os.kill(os.getpid(), signal.SIGTERM))


def run_worker_pid() -> int | None:
    """The Dagster run worker's pid when this step runs in a child process of it (multiprocess executor)."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else None


@contextlib.contextmanager
def bound_to_run_worker(on_gone: Callable[[str], None] | None = None, timeout_s: float = 15.0) -> Iterator[list[int]]:
    """Within the block, this step process exits as soon as its run worker is gone; ``on_gone(message)`` runs
    first (the asset records the run as failed: nobody else is left to), for at most ``timeout_s``. Yields the pids
    a Pipes child should watch: this process only, so the child stops *after* the failure is recorded (it notices
    within a second and stops its process groups). In-process execution (tests, `dg.materialize`) only yields."""
    worker = run_worker_pid()
    if worker is None:
        yield [os.getpid()]
        return

    def leave() -> None:
        message = f"the run worker (pid {worker}) is gone: step process {os.getpid()} and its trainer stopped"
        print(f"[void-pipeline] {message}", file=sys.stderr, flush=True)
        if on_gone is not None:
            reporter = threading.Thread(target=lambda: on_gone(message), daemon=True)
            reporter.start()
            reporter.join(timeout_s)
        os._exit(70)

    stop = threading.Event()
    watch([worker], leave, stop=stop)
    try:
        yield [os.getpid()]
    finally:
        stop.set()


# --- the guard ---------------------------------------------------------------------------------------------------


def spawn_group(command: Sequence[str], grace_s: float = GRACE_S, **popen: Any) -> subprocess.Popen[Any]:
    """Start ``command`` under the guard; stop it (and everything it started) with ``stop_group``. ``grace_s``: how
    long the guard waits after SIGTERM before it SIGKILLs what is left."""
    guard = [sys.executable, "-m", "void_pipeline.lib.processes", "--grace", str(grace_s), "--", *command]
    env = dict(popen.pop("env", None) or os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the guard imports this module from the same checkout
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    return subprocess.Popen(guard, env=env, **popen)


def stop_group(process: subprocess.Popen[Any], timeout_s: float = GRACE_S + 15) -> int:
    """Ask the guard to stop its group (SIGTERM) and wait; SIGKILL the guard if it does not end in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's); [] when it is gone. Processes end while this reads: a
    vanished task or process is skipped, never an error."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for task in tasks:
        try:
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return kids


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (via /proc/<pid>/task/*/children)."""
    found: list[int] = []
    seen, todo = {root}, [root]
    while todo:
        for kid in children(todo.pop()):
            if kid not in seen:
                seen.add(kid)
                found.append(kid)
                todo.append(kid)
    return found


def group_members(group: int) -> list[int]:
    """The live (not zombie) processes whose process group is ``group``."""
    members: list[int] = []
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return members
    for entry in entries:
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return members


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _stop_everything(group: int, grace_s: float, kill_for_s: float = 10.0) -> None:
    """SIGTERM the group and our descendants (processes born meanwhile too) for up to ``grace_s``, then SIGKILL
    sweeps until two scans in a row find nothing — a process forked between sweeps is caught by the next one.
    Never ourselves; never an exception (a process ending while /proc is read is not an error)."""
    me = os.getpid()

    def targets() -> set[int]:
        return {*group_members(group), *descendants(me)} - {me}

    terminated: set[int] = set()
    deadline = time.monotonic() + grace_s
    while (left := targets()) and time.monotonic() < deadline:
        _signal_all(left - terminated, signal.SIGTERM)
        terminated |= left
        _reap()
        time.sleep(0.05)
    quiet, deadline = 0, time.monotonic() + kill_for_s
    while quiet < 2 and time.monotonic() < deadline:
        left = targets()
        quiet = 0 if left else quiet + 1
        _signal_all(left, signal.SIGKILL)
        _reap()
        time.sleep(0.02)


def guard(command: list[str], grace_s: float = GRACE_S) -> int:
    parent = os.getppid()
    os.setsid()  # a group (and session) of our own: one scan of the group reaches everything below
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans below us are reparented to us, not to init
    if os.getppid() != parent:
        return 143  # the parent died before the death signal was armed
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # Only noted: a handler that raised could fire again (parent-death signal and watcher together) in the
        # middle of the stop and cut it short before its SIGKILL sweeps.
        received.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    watch([], lambda: os.kill(os.getpid(), signal.SIGTERM))
    group = os.getpgrp()
    try:
        child = subprocess.Popen(command)
    except OSError as err:
        print(f"cannot start {command[0]}: {err}", file=sys.stderr)
        return 127
    code: int | None = None
    while code is None and not received:
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = child.wait(timeout=0.2)
    if received:
        _stop_everything(group, grace_s)
        return 128 + received[0]
    _stop_everything(group, grace_s=min(grace_s, 2.0))  # stragglers (data loader workers, a launcher's children)
    return int(code or 0)


def main(argv: list[str]) -> int:
    grace_s = GRACE_S
    if argv[:1] == ["--grace"] and len(argv) > 1:
        try:
            grace_s = float(argv[1])
        except ValueError:
            grace_s = -1.0
        argv = argv[2:]
    if not argv or argv[0] != "--" or len(argv) < 2 or grace_s < 0:
        print("usage: python -m void_pipeline.lib.processes [--grace SECONDS] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return guard(argv[1:], grace_s)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
