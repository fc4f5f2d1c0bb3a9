"""Which accelerator training and serving use: ``VOID_ACCELERATOR`` (auto | cuda | cpu) and what ``nvidia-smi``
sees. ``auto`` is cuda when ``nvidia-smi -L`` lists a GPU, cpu otherwise; ``cpu`` forces the CPU path on a GPU
host; ``cuda`` is for a host whose GPU steps run elsewhere (a GPU container or pod) or to insist on one.

Standard library only: lib/environments.py chooses the environments' pins with it before any environment exists,
and lib/settings.py validates the same variable with ``choice_error``.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable

ACCELERATOR_ENV = "VOID_ACCELERATOR"
CHOICES = ("auto", "cuda", "cpu")
NVIDIA_SMI_TIMEOUT_S = 30.0  # a wedged driver can hang nvidia-smi: then it counts as no GPU


def choice_error(value: str) -> str | None:
    """None for a valid setting; otherwise the one line that names it and the valid ones."""
    if value in CHOICES:
        return None
    return f"{ACCELERATOR_ENV}={value!r} must be auto, cuda or cpu (auto: cuda when nvidia-smi lists a GPU)"


def parse_gpu_list(text: str) -> list[str]:
    """The GPUs in ``nvidia-smi -L`` output (``GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)``), one name each."""
    return [line.split(":", 1)[1].split("(UUID")[0].strip() for line in text.splitlines() if line.startswith("GPU ")]


def nvidia_smi(*arguments: str) -> str | None:
    """nvidia-smi's output, or None where it is missing, fails or hangs (no driver, no device)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", *arguments], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.cache
def gpu_names() -> tuple[str, ...]:
    """The NVIDIA GPUs this host sees (asked once per process: devices do not come and go under a run)."""
    return tuple(parse_gpu_list(nvidia_smi("-L") or ""))


def has_gpu() -> bool:
    return bool(gpu_names())


def gpu_memory_mib() -> int | None:
    """The first GPU's total memory in MiB (the one a single-GPU step uses); None without a GPU."""
    listed = nvidia_smi("--query-gpu=memory.total", "--format=csv,noheader,nounits") or ""
    values = [int(line.strip()) for line in listed.splitlines() if line.strip().isdigit()]
    return values[0] if values else None


def resolve(choice: str, gpu_present: Callable[[], bool] = has_gpu) -> str:
    """cuda or cpu for a valid setting (``choice_error`` first). ``cuda`` stays cuda without a local GPU: the
    steps may run on another host; ``cuda_missing`` says where that is an error."""
    if choice == "auto":
        return "cuda" if gpu_present() else "cpu"
    return choice


def cuda_missing(what: str) -> str:
    """The one line for cuda asked of a host that shows no GPU (``what``: what was about to be built or run)."""
    return (
        f"{ACCELERATOR_ENV}=cuda but nvidia-smi lists no GPU on this host, so {what} cannot use CUDA: "
        f"run it on a GPU host, or set {ACCELERATOR_ENV}=cpu (or auto) for the CPU path"
    )
