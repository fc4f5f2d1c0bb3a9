"""The managed server: a long-running vLLM or llama.cpp server for the current bundle (``serve up|status|down``).

Unlike the evaluation's server it outlives the command that starts it: it runs in a session of its own, and
``serve/server.json`` records its pid, process group, URL, models and log, so ``status`` and ``down`` find it and
``served_model`` can load a newly promoted adapter into it. The API key comes from the environment and is passed
to vLLM in its environment (to llama.cpp in a 0600 config file deleted once it answers); it is never written to the
state file, a log or the command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from void_pipeline.lib.files import locked, write_text_atomic
from void_pipeline.lib.ingest.xrpc import auth_header
from void_pipeline.lib.layout import ServePaths
from void_pipeline.lib.processes import group_members, pid_alive
from void_pipeline.lib.serve.llama_server import ENGINE as LLAMA_ENGINE
from void_pipeline.lib.serve.llama_server import LlamaSpec, is_llama_server, write_config
from void_pipeline.lib.serve.llama_server import server_command as llama_command
from void_pipeline.lib.serve.llama_server import server_env as llama_env
from void_pipeline.lib.serve.vllm_server import (
    ServerFailed,
    ServerSpec,
    log_tail,
    server_command,
    server_env,
    wait_until_up,
)
from void_pipeline.lib.settings import SERVE_API_KEY_ENV

DEFAULT_PORT = 8000
API_KEY_ENV = SERVE_API_KEY_ENV  # the endpoint's key, for the server and for every client (read by lib/settings.py)


class AlreadyRunning(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerState:
    pid: int
    url: str  # http://HOST:PORT (no /v1)
    models: list[str]
    log: str
    started: float  # time.time()
    bundle_version: int | None  # the current bundle served under its name (updated when one is hot-loaded)
    adapters: dict[str, str]  # served name → the adapter folder it answers with now
    base_model: str  # vLLM: the base model; llama.cpp: the GGUF file
    engine: str = "vllm"  # or "llama.cpp" (state files written before engines were recorded are vLLM's)

    @classmethod
    def read(cls, serve: ServePaths) -> ServerState | None:
        try:
            return cls(**json.loads(serve.server_state.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as err:
            raise ValueError(f"{serve.server_state} is damaged ({err}): stop the server by hand and delete it") from err

    def write(self, serve: ServePaths) -> None:
        write_text_atomic(serve.server_state, json.dumps(self.__dict__, indent=2))

    def alive(self) -> bool:
        return pid_alive(self.pid) and is_engine(self.pid, self.engine)


def is_engine(pid: int, engine: str = "vllm") -> bool:
    """The pid is still a process of the engine (not a recycled pid): vLLM's server runs ``-m
    vllm.entrypoints...`` and titles its engine processes ``VLLM::EngineCore``, ``VLLM::Worker``; llama.cpp's runs
    ``-m llama_cpp.server``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid_alive(pid)  # no /proc: trust the pid
    return is_llama_server(cmdline) if engine == LLAMA_ENGINE else b"vllm" in cmdline.lower()


def is_vllm(pid: int) -> bool:
    return is_engine(pid, "vllm")


def left_running(state: ServerState) -> list[int]:
    """The engine's processes of the server's process group that still run. A SIGKILLed vLLM server leaves its
    engine core and workers behind (reparented to init, in the same group: its pgid is its pid); only the engine's
    processes count, so a group whose number was recycled is left alone."""
    me = os.getpid()
    return sorted(pid for pid in group_members(state.pid) if pid != me and is_engine(pid, state.engine))


def leftovers_note(pids: Sequence[int]) -> str:
    return f"{len(pids)} vLLM engine process(es) of its group still run (pids {', '.join(map(str, pids))})"


def record_loaded(serve: ServePaths, url: str, name: str, adapter: str, bundle_version: int) -> bool:
    """After an adapter was hot-loaded into the server at ``url``: when it is the managed server, server.json
    says what it serves now (``status`` shows it). False when ``url`` is not the managed server."""
    with locked(serve.root / ".server.lock"):  # two promotions never lose each other's update
        state = ServerState.read(serve)
        if state is None or state.url != url.rstrip("/").removesuffix("/v1") or not state.alive():
            return False
        replace(state, bundle_version=bundle_version, adapters={**state.adapters, name: adapter}).write(serve)
    return True


def running_endpoint(serve: ServePaths, given: str | None = None) -> tuple[str | None, bool]:
    """(URL without /v1, managed here) of the server to talk to: ``given`` (a flag, or ``$VOID_SERVE_URL``), or
    the managed server when it runs; (None, False) when none is known."""
    url = given
    if url:
        return url.rstrip("/").removesuffix("/v1"), False
    state = ServerState.read(serve)
    return (state.url, True) if state is not None and state.alive() else (None, False)


def connect_url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def up(
    serve: ServePaths,
    python: str,
    spec: ServerSpec,
    api_key: str | None,
    bundle_version: int | None,
    timeout_s: float = 900.0,
    on_progress: Callable[[str], None] | None = None,
) -> ServerState:
    """Start the vLLM server in a session of its own and wait until it answers. ServerFailed (the server stopped
    again, nothing left running) when it does not come up."""
    check_none_running(serve)
    port = spec.port or DEFAULT_PORT
    state = ServerState(0, connect_url(spec.host, port), [], str(serve.server_log), 0.0, bundle_version,
                        dict(spec.adapters), spec.model)  # fmt: skip
    return start(serve, server_command(python, spec, port), server_env(spec, api_key), state, api_key, timeout_s,
                 on_progress)  # fmt: skip


def up_llama(
    serve: ServePaths,
    python: str,
    spec: LlamaSpec,
    api_key: str | None,
    bundle_version: int | None,
    timeout_s: float = 900.0,
    on_progress: Callable[[str], None] | None = None,
) -> ServerState:
    """Start llama-cpp-python's server on ``spec.gguf``; its config file (it holds the key) exists only until the
    server answers or fails."""
    check_none_running(serve)
    port = spec.port or DEFAULT_PORT
    serve.root.mkdir(parents=True, exist_ok=True)
    config = write_config(serve.root / f".llama-server-{os.getpid()}.json", spec, port, api_key)
    state = ServerState(0, connect_url(spec.host, port), [], str(serve.server_log), 0.0, bundle_version,
                        {}, spec.gguf, LLAMA_ENGINE)  # fmt: skip
    try:
        return start(serve, llama_command(python, config), llama_env(), state, api_key, timeout_s, on_progress)
    finally:
        config.unlink(missing_ok=True)


def check_none_running(serve: ServePaths) -> None:
    if (recorded := ServerState.read(serve)) is not None and recorded.alive():
        raise AlreadyRunning(f"a server already runs at {recorded.url} (pid {recorded.pid}): serve down first")
    if recorded is not None and (engines := left_running(recorded)):  # recording a new one would lose them
        raise AlreadyRunning(f"the last server (pid {recorded.pid}) is gone but {leftovers_note(engines)}: "
                             "serve down stops them")  # fmt: skip


def start(
    serve: ServePaths,
    command: list[str],
    env: dict[str, str],
    state: ServerState,
    api_key: str | None,
    timeout_s: float,
    on_progress: Callable[[str], None] | None,
) -> ServerState:
    """Run ``command`` in a session of its own, record it, wait until it answers (``state`` gives the rest)."""
    serve.root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(serve.server_log, "ab") as log:
        log.write(f"\n--- serve up {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: it outlives this command, `down` stops all of it
        )
        state = replace(state, pid=process.pid, started=time.time())
        state.write(serve)
        try:
            name = "llama.cpp" if state.engine == LLAMA_ENGINE else "vLLM"
            running = wait_until_up(process, state.url, api_key, serve.server_log, started, timeout_s, on_progress, log,
                                    name, health_path(state.engine))  # fmt: skip
        except BaseException:
            stop_process_group(process.pid)
            serve.server_state.unlink(missing_ok=True)
            raise
    state = replace(state, models=running.models)
    state.write(serve)
    return state


def stop_process_group(pid: int, grace_s: float = 20.0) -> bool:
    """SIGTERM to the server's process group, SIGKILL after ``grace_s``. True when something was running."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
    return True


def stop_pids(pids: Sequence[int], grace_s: float = 20.0) -> list[int]:
    """SIGTERM to each, SIGKILL to those alive after ``grace_s``; returns those still alive after that."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
            time.sleep(0.2)
        pids = [pid for pid in pids if pid_alive(pid)]
        if not pids:
            break
    return list(pids)


def down(serve: ServePaths) -> str:
    """Stop the recorded server and every vLLM process of its group (its engines outlive a SIGKILLed server)."""
    state = ServerState.read(serve)
    if state is None:
        return "no managed server is recorded: nothing to stop"
    stopped = state.alive() and stop_process_group(state.pid)
    engines = left_running(state)  # after a SIGKILL of the group: the ones not yet gone; else: left by a dead server
    if survivors := stop_pids(engines):
        raise RuntimeError(f"vLLM processes {survivors} of the server's group survived SIGKILL: stop them by hand "
                           f"({serve.server_state} is kept)")  # fmt: skip
    serve.server_state.unlink(missing_ok=True)
    if stopped:
        return f"stopped the server at {state.url} (pid {state.pid})"
    if engines:
        return (f"the server (pid {state.pid}) had already stopped; stopped the {len(engines)} vLLM engine "
                f"process(es) of its group it left running (pids {', '.join(map(str, engines))})")  # fmt: skip
    return "the server had already stopped"


def status(serve: ServePaths, api_key: str | None) -> dict[str, Any]:
    """What runs: ``state`` up | starting | down | unhealthy, with URL, pid, models and uptime."""
    state = ServerState.read(serve)
    if state is None:
        return {"state": "down", "why": "no managed server is recorded (void-pipeline serve up)"}
    report: dict[str, Any] = {"url": state.url, "pid": state.pid, "log": state.log, "bundle": state.bundle_version,
                              "adapters": state.adapters, "engine": state.engine}  # fmt: skip
    if not state.alive():
        tail = log_tail(Path(state.log), 5)
        if engines := left_running(state):
            report["left_running"] = engines
            report["note"] = f"{leftovers_note(engines)}: serve down stops them"
        return {**report, "state": "down", "why": f"pid {state.pid} is gone; the log ends:\n{tail}"}
    report["uptime_s"] = round(time.time() - state.started)
    try:
        health = httpx.get(f"{state.url}{health_path(state.engine)}", headers=auth_header(api_key), timeout=5.0)
        health_code = health.status_code
    except httpx.HTTPError as err:
        return {**report, "state": "starting", "why": f"the process runs but {state.url} does not answer ({err})"}
    if health_code != 200 and not (state.engine == LLAMA_ENGINE and health_code in (401, 403)):  # the key: below
        return {**report, "state": "unhealthy", "why": f"{health_path(state.engine)} answered {health_code}"}
    listed = httpx.get(f"{state.url}/v1/models", headers=auth_header(api_key), timeout=10.0)
    if listed.status_code == 200:
        report["models"] = [m["id"] for m in listed.json().get("data", [])]
    else:
        report["models"] = state.models
        report["note"] = f"/v1/models answered {listed.status_code}: is {API_KEY_ENV} the server's key?"
    return {**report, "state": "up"}


def health_path(engine: str) -> str:
    return "/v1/models" if engine == LLAMA_ENGINE else "/health"


def foreground(process_pid: int) -> int:
    """Wait for the server (a container's main process), passing SIGTERM/SIGINT on to its group."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(process_pid), signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    _, status_code = os.waitpid(process_pid, 0)
    return os.waitstatus_to_exitcode(status_code)


__all__ = ["AlreadyRunning", "ServerFailed", "ServerState", "down", "foreground", "status", "up", "up_llama"]
