"""A local AT Protocol world ("devnet"): a real PLC directory, real PDSes and a small AppView on 127.0.0.1.

The services are the npm packages pinned in ``devnet/`` run by our own launchers (``devnet/start-plc.mjs``,
``devnet/start-pds.mjs``) on Node >= 22. Every start uses a fresh data directory (the PLC keeps its state in
memory, so old PDS data would point at DIDs that no longer exist), free ports, a ready-wait on each service's
health endpoint, and a stop by process id. The running world is described by ``<state_dir>/devnet.json`` so a
CLI in another process can seed it or stop it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from void_pipeline.lib import environments
from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.processes import pid_alive

STATE_FILE = "devnet.json"
MARKER_FILE = ".void-devnet"  # written into every state folder we create: only such a folder is ever wiped
# What a state folder of an older version held (before the marker): recognised as a devnet's too.
KNOWN_CONTENTS = {STATE_FILE, MARKER_FILE, "logs", "seed"}
APPVIEW_MODULE = "void_pipeline.testworld.appview"
LAUNCHER_MARKERS = (b"start-pds.mjs", b"start-plc.mjs", APPVIEW_MODULE.encode())
PORT_IN_USE_EXIT = 98  # the launchers' exit code for EADDRINUSE


class DevnetError(RuntimeError):
    """The devnet could not start or stop; the message carries the launcher's log tail."""


@dataclass(frozen=True)
class PdsLayout:
    """One PDS of the devnet: a name and the handle domain its accounts get."""

    name: str
    handle_domain: str


# The agent lives on "comind" (like void.comind.network); most other accounts on "bsky".
DEFAULT_PDS_LAYOUT = (PdsLayout("comind", ".comind.test"), PdsLayout("bsky", ".bsky.test"))


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    url: str
    port: int
    pid: int
    log: str
    handle_domain: str = ""
    data_dir: str = ""


@dataclass(frozen=True)
class DevnetInfo:
    """Everything a client needs to use a running devnet. Written to ``devnet.json`` (mode 0600)."""

    state_dir: str
    plc: ServiceProcess
    pds: tuple[ServiceProcess, ...]
    admin_password: str
    account_secret: str  # derives the local test accounts' passwords; a loopback-only world, no real secret
    started_at: str
    appview: ServiceProcess | None = None

    @property
    def plc_url(self) -> str:
        return self.plc.url

    @property
    def appview_url(self) -> str | None:
        return self.appview.url if self.appview else None

    @property
    def pds_urls(self) -> list[str]:
        return [p.url for p in self.pds]

    def pds_named(self, name: str) -> ServiceProcess:
        for pds in self.pds:
            if pds.name == name:
                return pds
        raise KeyError(f"no PDS named {name!r} in this devnet (have: {[p.name for p in self.pds]})")

    def pds_for_handle(self, handle: str) -> ServiceProcess:
        for pds in self.pds:
            if handle.endswith(pds.handle_domain):
                return pds
        raise KeyError(f"handle {handle!r} matches no devnet PDS domain {[p.handle_domain for p in self.pds]}")

    def account_password(self, handle: str) -> str:
        return hmac.new(self.account_secret.encode(), handle.encode(), hashlib.sha256).hexdigest()[:32]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> DevnetInfo:
        raw: dict[str, Any] = json.loads(text)
        raw["plc"] = ServiceProcess(**raw["plc"])
        raw["pds"] = tuple(ServiceProcess(**p) for p in raw["pds"])
        raw["appview"] = ServiceProcess(**raw["appview"]) if raw.get("appview") else None
        known = {f.name for f in fields(cls)}  # a state file from another version: keep what we understand
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self) -> Path:
        path = Path(self.state_dir) / STATE_FILE
        write_text_atomic(path, self.to_json(), mode=0o600)
        return path

    @classmethod
    def load(cls, state_dir: Path) -> DevnetInfo:
        path = Path(state_dir) / STATE_FILE
        if not path.exists():
            raise DevnetError(f"no devnet state in {state_dir}: start one with `make devnet-up`")
        return cls.from_json(path.read_text())

    def processes(self) -> list[ServiceProcess]:
        return [self.plc, *self.pds, *([self.appview] if self.appview else [])]

    def health(self) -> DevnetHealth:
        alive: list[str] = []
        dead: list[str] = []
        for service in self.processes():
            (alive if is_service_alive(service) else dead).append(service.name)
        return DevnetHealth(tuple(alive), tuple(dead))


@dataclass(frozen=True)
class DevnetHealth:
    """Which services of a devnet answer to their pid. ``devnet status`` and ``devnet up`` read the same."""

    alive: tuple[str, ...]
    dead: tuple[str, ...]

    @property
    def state(self) -> str:
        if not self.dead:
            return "running"
        return "stopped" if not self.alive else "half-running"

    def summary(self) -> str:
        if self.state == "running":
            return "running"
        if self.state == "stopped":
            return "NOT running (stale state)"
        return (
            f"HALF-RUNNING: {', '.join(self.dead)} died while {', '.join(self.alive)} still run; "
            "`make devnet-down` stops the rest, then `devnet up` starts a fresh one"
        )


def seed_dir(state_dir: Path) -> Path:
    """Ground truth of what was seeded into a devnet; lives and dies with that devnet."""
    return state_dir / "seed"


def is_devnet_state_dir(folder: Path) -> bool:
    """A folder this program created for a devnet (marker file), or one of an older version's (known names)."""
    if (folder / MARKER_FILE).exists():
        return True
    names = {entry.name for entry in folder.iterdir()}
    known = all(n in KNOWN_CONTENTS or n.startswith("pds-") for n in names)
    return known and bool(names & {STATE_FILE, "logs"})  # `devnet down` removes devnet.json, logs/ stay


def prepare_state_dir(folder: Path) -> None:
    """Wipe a previous devnet's state folder, or create a new one; any other folder with files is refused."""
    if folder.exists() and not folder.is_dir():
        raise DevnetError(f"--state-dir {folder} is a file, not a folder")
    if folder.exists() and any(folder.iterdir()):
        if not is_devnet_state_dir(folder):
            raise DevnetError(
                f"refusing to use {folder} as the devnet's state folder: it holds files and was not created by "
                f"`devnet up` (no {MARKER_FILE}); every start wipes its state folder, so choose an empty or new one"
            )
        shutil.rmtree(folder)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / MARKER_FILE).write_text("state folder of a void-pipeline devnet: wiped at every `devnet up`\n")


@dataclass
class Devnet:
    """Starts and stops a devnet. Use as a context manager, or ``start()`` / ``stop()``."""

    state_dir: Path
    layout: tuple[PdsLayout, ...] = DEFAULT_PDS_LAYOUT
    plc_port: int | None = None
    pds_ports: tuple[int | None, ...] = ()
    with_appview: bool = True
    startup_timeout_s: float = 90.0
    log_level: str = "warn"
    info: DevnetInfo | None = None
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def start(self) -> DevnetInfo:
        self.state_dir = Path(self.state_dir)
        previous = self.state_dir / STATE_FILE
        if previous.exists():
            health = DevnetInfo.from_json(previous.read_text()).health()
            if health.state == "running":
                raise DevnetError(f"a devnet is already running from {self.state_dir}: stop it first (`devnet down`)")
            if health.state == "half-running":
                raise DevnetError(f"the devnet in {self.state_dir} is {health.summary()}")
        prepare_state_dir(self.state_dir)

        node = environments.find_node()
        environments.ensure("devnet")
        admin_password = secrets.token_hex(16)
        try:
            plc = self._start_service(
                "plc", [str(node), "start-plc.mjs"], preferred_port=self.plc_port, health="/_health", env={}
            )
            pds_list = []
            for index, layout in enumerate(self.layout):
                data_dir = self.state_dir / f"pds-{layout.name}"
                preferred = self.pds_ports[index] if index < len(self.pds_ports) else None
                pds_list.append(
                    self._start_service(
                        f"pds-{layout.name}",
                        [
                            str(node),
                            "start-pds.mjs",
                            "--plc-url",
                            plc.url,
                            "--data-dir",
                            str(data_dir),
                            "--handle-domain",
                            layout.handle_domain,
                        ],
                        preferred_port=preferred,
                        health="/xrpc/_health",
                        env={"PDS_ADMIN_PASSWORD": admin_password},
                        handle_domain=layout.handle_domain,
                        data_dir=str(data_dir),
                    )
                )
            appview = None
            if self.with_appview:
                pds_args = [arg for pds in pds_list for arg in ("--pds-url", pds.url)]
                appview = self._start_service(
                    "appview",
                    [sys.executable, "-m", APPVIEW_MODULE, "--plc-url", plc.url, *pds_args],
                    preferred_port=None,
                    health="/xrpc/_health",
                    env={"PYTHONPATH": str(REPO_ROOT)},
                )
        except BaseException:
            self._kill_children()
            raise
        self.info = DevnetInfo(
            state_dir=str(self.state_dir),
            plc=plc,
            pds=tuple(pds_list),
            admin_password=admin_password,
            account_secret=secrets.token_hex(16),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            appview=appview,
        )
        self.info.save()
        return self.info

    def stop(self) -> None:
        if self.info is not None:
            stop_devnet(self.info)
        self._kill_children()

    def __enter__(self) -> DevnetInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------------------

    def _start_service(
        self,
        name: str,
        command: list[str],
        preferred_port: int | None,
        health: str,
        env: dict[str, str],
        handle_domain: str = "",
        data_dir: str = "",
    ) -> ServiceProcess:
        log_path = self.state_dir / "logs" / f"{name}.log"
        child_env = {
            **os.environ,
            **env,
            "LOG_ENABLED": "true",
            "LOG_LEVEL": self.log_level,
            "LOG_DESTINATION": str(log_path),
        }
        deadline = time.monotonic() + self.startup_timeout_s
        for attempt in range(8):
            if attempt == 0 and preferred_port and port_is_free(preferred_port):
                port = preferred_port
            else:
                if attempt == 0 and preferred_port:
                    print(f"[devnet] port {preferred_port} is in use; {name} takes a free port instead")
                port = free_port()
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    [*command, "--port", str(port)],
                    cwd=environments.DEVNET_DIR,
                    env=child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped together, untouched by our Ctrl-C
                )
            self._children.append(process)
            url = f"http://localhost:{port}"
            if wait_healthy(process, url + health, deadline):
                return ServiceProcess(name, url, port, process.pid, str(log_path), handle_domain, data_dir)
            if process.poll() == PORT_IN_USE_EXIT:
                continue
            self._kill_children()
            state = f"exit code {process.returncode}" if process.returncode is not None else "no answer in time"
            raise DevnetError(f"{name} failed to start ({state}). Last lines of {log_path}:\n{log_tail(log_path)}")
        raise DevnetError(f"{name} found no free port after 8 tries. Last lines of {log_path}:\n{log_tail(log_path)}")

    def _kill_children(self) -> None:
        for process in self._children:
            if process.poll() is None:
                terminate_group(process.pid)
            process.wait(timeout=15)
        self._children.clear()


def wait_healthy(process: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.get(url).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    return False


def stop_devnet(info: DevnetInfo, timeout_s: float = 15.0) -> list[int]:
    """Stop every service of ``info`` by its process id; return the pids that were stopped."""
    stopped = []
    for service in reversed(info.processes()):
        if is_service_alive(service):
            terminate_group(service.pid)
            stopped.append(service.pid)
    deadline = time.monotonic() + timeout_s
    for pid in stopped:
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    state = Path(info.state_dir) / STATE_FILE
    if state.exists() and not any(is_service_alive(p) for p in info.processes()):
        state.unlink()
    return stopped


def terminate_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)


def is_service_alive(service: ServiceProcess) -> bool:
    """True when ``service.pid`` is alive and still one of our launchers (guards against a reused pid)."""
    if not pid_alive(service.pid):
        return False
    try:
        cmdline = Path(f"/proc/{service.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(LAUNCHER_MARKERS) for arg in cmdline) and str(service.port).encode() in cmdline


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"
