"""Folders replaced whole and owner locks that name their holder (lib/files.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from void_pipeline.lib.files import Busy, acquire_owner, read_holder, staged_dir
from void_pipeline.lib.layout import REPO_ROOT


def test_a_failed_replacement_leaves_the_old_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    with staged_dir(target) as staging:
        (staging / "train.jsonl").write_text("old rows\n")
    with pytest.raises(RuntimeError), staged_dir(target) as staging:
        (staging / "train.jsonl").write_text("")  # half-written, then the writer fails
        raise RuntimeError("a check failed")
    assert (target / "train.jsonl").read_text() == "old rows\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # no staging folder left behind


def test_a_completed_replacement_swaps_every_file_at_once(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    with staged_dir(target) as staging:
        (staging / "a").write_text("1")
        (staging / "stale").write_text("only in the old one")
    with staged_dir(target) as staging:
        (staging / "a").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a"] and (target / "a").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_a_replacement_killed_between_its_renames_is_undone_at_the_next_one(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    # what the two-rename fallback leaves when killed after its first rename, by a process now gone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    old = tmp_path / f".dataset.old-{dead.stdout.strip()}-1"
    old.mkdir()
    (old / "train.jsonl").write_text("the good rows\n")
    staging = tmp_path / f".dataset.staging-{dead.stdout.strip()}-2"
    staging.mkdir()
    with pytest.raises(RuntimeError), staged_dir(target):
        raise RuntimeError("fails again")
    assert (target / "train.jsonl").read_text() == "the good rows\n"
    assert not old.exists() and not staging.exists()


HOLD = (
    "import sys, time; from pathlib import Path; from void_pipeline.lib.files import acquire_owner; "
    "lock = acquire_owner(Path(sys.argv[1]), 'training, Dagster run abc', 'run folder X'); "
    "print('held', flush=True); time.sleep(120)"
)


def test_an_owner_lock_names_its_live_holder_and_is_taken_over_when_it_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock_path = tmp_path / "trainer.lock"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy) as refused:
            acquire_owner(lock_path, "a second trainer", "run folder X")
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and "training, Dagster run abc" in message
        assert f"kill {holder.pid}" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    def no_waiting(seconds: float) -> None:
        raise AssertionError(f"waited {seconds} s for a lock whose holder is dead")

    monkeypatch.setattr(time, "sleep", no_waiting)  # taken over at once, not after a grace period
    with acquire_owner(lock_path, "a second trainer", "run folder X") as lock:  # the dead holder's lock is free
        assert lock.took_over_from == holder.pid
        assert read_holder(lock_path)["pid"] == os.getpid()
