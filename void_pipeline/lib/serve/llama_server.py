"""llama.cpp on the CPU: a GGUF quantized with llama-cpp-python's own quantizer and served by its OpenAI-compatible
server (``python -m llama_cpp.server``), both run in the ``llama-cpp`` environment (compiled from the pinned source
archive, lib/environments.py).

The server reads every setting from a JSON config file (``--config_file``) that this module writes mode 0600 and
deletes once the server answers: the API key never reaches a command line, and no stray variable of the caller's
environment (llama_cpp.server's settings are pydantic-settings, read from unprefixed names like ``MODEL``) changes
what is served. The model's own chat template from the GGUF's metadata frames the turns, ``tools`` included; the
server does not parse tool calls out of the text, so the reference client does (lib/serve/client.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.processes import spawn_group, stop_group
from void_pipeline.lib.serve.vllm_server import RunningServer, free_port, wait_until_up

ENGINE = "llama.cpp"
# The types `serve up --engine llama.cpp --quant` takes: F16 is the exported file as it is; the others are
# llama.cpp's LLAMA_FTYPE_MOSTLY_<TYPE> (external/quantize_gguf.py looks the constant up by this name).
QUANT_TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M")
# The GGUF's own jinja chat template (tokenizer.chat_template), rendered with the request's tools; the server would
# otherwise guess a built-in format from it, and the built-in ones ignore tools.
CHAT_FORMAT = "chat_template.default"
DEFAULT_CONTEXT = 4096
# Environment names the server reads besides its settings fields (uvicorn's address; a config file)
OVERRIDING_ENV = ("HOST", "PORT", "CONFIG_FILE")


class QuantizeError(ValueError):
    """A quantization type that does not exist, or a quantization that failed: one line."""


def quant_type(name: str) -> str:
    """The type as QUANT_TYPES spells it; QuantizeError listing the valid ones."""
    wanted = name.strip().upper()
    if wanted not in QUANT_TYPES:
        raise QuantizeError(f"unknown GGUF quantization type {name!r}: use one of {', '.join(QUANT_TYPES)}")
    return wanted


def quantized_path(f16: Path, quant: str) -> Path:
    """Beside the exported f16 file, named as the export names its files (model-<type>.gguf)."""
    return f16 if quant == "F16" else f16.with_name(f16.name.replace("-f16.gguf", f"-{quant.lower()}.gguf"))


def quantize(python: str, f16: Path, quant: str, timeout_s: float = 3600.0) -> tuple[Path, dict[str, object]]:
    """``f16`` quantized to ``quant`` beside it (kept: a second call reads it back), and what the quantizer reported
    (sizes, seconds). F16 is the file itself. Written to a temporary name and renamed: never half a file."""
    quant = quant_type(quant)
    target = quantized_path(f16, quant)
    if not f16.is_file():
        raise QuantizeError(f"{f16}: no such GGUF file (materialize gguf_export, or give --gguf PATH)")
    if quant == "F16" or target.exists():
        return target, {"type": quant, "bytes": target.stat().st_size, "cached": quant != "F16"}
    command = [python, "-m", "void_pipeline.external.quantize_gguf", str(f16), str(target), quant]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise QuantizeError(f"quantizing {f16.name} to {quant} failed: {lines[-1] if lines else done.returncode}")
    return target, dict(json.loads(done.stdout.strip().splitlines()[-1]))


@dataclass(frozen=True)
class LlamaSpec:
    """What the llama.cpp server serves and how."""

    gguf: str
    served_name: str  # the bundle's served model name: what requests name as "model"
    context: int = DEFAULT_CONTEXT
    threads: int | None = None  # None: every core (generation and prompt)
    host: str = "127.0.0.1"  # loopback unless a container publishes it
    port: int | None = None


def server_config(spec: LlamaSpec, port: int, api_key: str | None) -> dict[str, object]:
    """The config file's settings (llama_cpp.server's ConfigFileSettings)."""
    threads = spec.threads or os.cpu_count() or 1
    model = {"model": spec.gguf, "model_alias": spec.served_name, "chat_format": CHAT_FORMAT, "n_ctx": spec.context,
             "n_threads": threads, "n_threads_batch": threads, "verbose": False}  # fmt: skip
    config: dict[str, object] = {"host": spec.host, "port": port, "models": [model]}
    if api_key:
        config["api_key"] = api_key
    return config


def write_config(path: Path, spec: LlamaSpec, port: int, api_key: str | None) -> Path:
    """The config file, readable by this user only (it holds the key)."""
    write_text_atomic(path, json.dumps(server_config(spec, port, api_key), indent=2), mode=0o600)
    return path


def server_command(python: str, config: Path) -> list[str]:
    """The command line: the config file's path, no setting and no secret."""
    return [python, "-m", "llama_cpp.server", "--config_file", str(config)]


def server_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without the names that would override the config file."""
    source = dict(os.environ if environ is None else environ)
    return {k: v for k, v in source.items() if k.upper() not in OVERRIDING_ENV} | {"PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def llama_server(
    python: str, spec: LlamaSpec, log_path: Path, startup_timeout_s: float = 600.0
) -> Iterator[RunningServer]:
    """A server for one block (benchmarks, tests), as vllm_server is: a free port, a key made for this start, stopped
    with everything it started on the way out, whatever happens inside."""
    port = spec.port or free_port()
    api_key = secrets.token_urlsafe(24)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    config = write_config(log_path.with_name(f".{log_path.stem}-{os.getpid()}.json"), spec, port, api_key)
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = spawn_group(server_command(python, config), stdout=log, stderr=subprocess.STDOUT, env=server_env())
        try:
            server = wait_until_up(process, f"http://127.0.0.1:{port}", api_key, log_path, started, startup_timeout_s,
                                   None, log, "llama.cpp", "/v1/models")  # fmt: skip
            config.unlink()
            yield server
        finally:
            config.unlink(missing_ok=True)
            stop_group(process)


def is_llama_server(cmdline: bytes) -> bool:
    return b"llama_cpp.server" in cmdline


__all__ = ["ENGINE", "QUANT_TYPES", "LlamaSpec", "QuantizeError", "quant_type", "quantize", "server_command"]
