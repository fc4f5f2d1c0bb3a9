"""Atomic file writes (a reader sees the old file or the new one, never half of one), folders replaced only when
the new one is complete, file locks, exclusive owner locks that name their holder, and the two ways a file fails
an operator that deserve one clear line: a full disk, and a text file that is not text."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import io
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from void_pipeline.lib.processes import pid_alive

if TYPE_CHECKING:  # the trainer environment imports this module and has no polars
    import polars as pl


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class DiskFull(OSError):
    """No space (or quota) left while writing: the message says "disk full", names the folder and what was kept."""

    def __str__(self) -> str:
        return str(self.strerror)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def disk_full_named(folder: Path, kept: str) -> Iterator[None]:
    """Out of space while the block writes into ``folder``: a ``DiskFull`` naming it (an errno alone names neither
    the folder nor the way out); ``kept`` says what is left as it was."""
    try:
        yield
    except OSError as err:
        if err.errno not in NO_SPACE:
            raise
        raise DiskFull(
            err.errno, f"disk full: no space left to write {folder} ({kept}); free space on its disk and run again"
        ) from err


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path = Path(path)
    with disk_full_named(path.parent, f"{path.name} is left as it was"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    write_bytes_atomic(path, buffer.getvalue())


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    write_bytes_atomic(path, text.encode(), mode)


class NotText(ValueError):
    """A file that should hold UTF-8 text does not (a binary dropped in by mistake); the message names it."""


def read_utf8(path: Path, what: str) -> str:
    """The text of ``path`` (``what`` it is, for the message): a decode error alone names no file."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NotText(
            f"{what} {path} is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}): give a text file"
        ) from err


# --- folders replaced whole ------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths atomically


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2); False where the system or filesystem can't."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), f"cannot swap {a} and {b}: {os.strerror(ctypes.get_errno())}")


def _aside(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{time.monotonic_ns()}")


def _restore_interrupted(target: Path) -> None:
    """A replacement killed between its two renames left the old folder aside: put it back; drop dead staging."""
    for leftover in target.parent.glob(f".{target.name}.*-*"):
        kind, pid = leftover.name.removeprefix(f".{target.name}.").split("-")[:2]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        if kind == "old" and not target.exists():
            leftover.rename(target)
        elif kind in ("old", "staging"):
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Write a folder's new contents beside it; ``target`` is replaced only when the block ends without error.

    Readers see the old folder or the new one, whole. A failure (or a kill) leaves the old folder as it was.
    """
    target = Path(target)
    # the message names the folder being replaced, not its hidden staging twin
    with disk_full_named(target, "its previous contents are kept as they were"):
        target.parent.mkdir(parents=True, exist_ok=True)
        _restore_interrupted(target)
        staging = _aside(target, "staging")
        staging.mkdir()
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replace_dir(staging, target)


def replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` in place of ``target`` (which may not exist) and delete the old one."""
    if not target.exists():
        new.rename(target)
        return
    if _exchange(new, target):
        shutil.rmtree(new)  # now holds the old contents
        return
    old = _aside(target, "old")
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# --- one owner at a time ---------------------------------------------------------------------------------------


class Busy(RuntimeError):
    """Another live process holds the lock; the message names it."""


@dataclass
class OwnerLock:
    """An exclusive lock on a folder's lock file, held as long as the process (and any child given its ``fd``)
    lives. The file says who holds it: pid, host, what for, since when. The kernel drops the lock when its
    holders die, so a stale lock file from a dead process is simply taken over."""

    path: Path
    handle: TextIO
    previous: dict[str, Any]

    @property
    def fd(self) -> int:
        return self.handle.fileno()

    @property
    def took_over_from(self) -> int | None:
        """The pid of a dead earlier holder whose lock file was left behind, if any."""
        pid = self.previous.get("pid")
        return int(pid) if isinstance(pid, int) and pid != os.getpid() else None

    def release(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.flush()
            fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

    def __enter__(self) -> OwnerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    what = f" ({holder['purpose']})" if holder.get("purpose") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{what}, since {holder.get('since')}"


def acquire_owner(path: Path, purpose: str, what: str) -> OwnerLock:
    """Take the owner lock at ``path`` without waiting; ``Busy`` names the live holder. ``what`` is the thing
    guarded, for the message (e.g. "run folder /data/train/abc")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - lives as long as the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        holder = read_holder(path)
        stop = f"; wait for it to finish or stop it (kill {holder['pid']})" if holder.get("pid") else ""
        raise Busy(f"{what} is in use by {describe_holder(holder)}{stop}") from None
    previous = read_holder(path)
    handle.seek(0)
    handle.truncate()
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose, "since": since}))
    handle.flush()
    return OwnerLock(path, handle, previous)
