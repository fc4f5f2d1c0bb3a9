"""llama.cpp on the CPU: the session's merged tiny model exported to GGUF, quantized with llama-cpp-python's own
quantizer and served by its OpenAI-compatible server behind ``serve up --engine llama.cpp``; a held-out thread
answered through it by the reference client. The fast tests check what is decided before any server runs: the
quantization type, the server's command line and config file, the client's llama.cpp requests."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from void_pipeline.lib import environments
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL, REPLY_TOOL_NAME
from void_pipeline.lib.curate.request import direct_profile
from void_pipeline.lib.layout import REPO_ROOT, DataLayout, RunPaths
from void_pipeline.lib.processes import group_members, pid_alive
from void_pipeline.lib.serve.bundle import Promotion, add_bundle, make_current
from void_pipeline.lib.serve.client import Endpoint, Sampling, agent_loop, reply, text_tool_calls
from void_pipeline.lib.serve.llama_server import (
    QUANT_TYPES,
    LlamaSpec,
    QuantizeError,
    quant_type,
    quantize,
    quantized_path,
    server_command,
    server_env,
    write_config,
)
from void_pipeline.lib.serve.managed import ServerState
from void_pipeline.lib.serve.vllm_server import free_port
from void_pipeline_tests.support.trainer import Trained, run_trainer

KEY = "test-llama-key-not-a-secret"
GREEDY = Sampling(temperature=0.0, max_tokens=24, max_posts=2, seed=5)


# --- fast: decided before a server runs ------------------------------------------------------------------


def test_an_unknown_quantization_type_is_one_line_naming_the_valid_ones(tmp_path: Path) -> None:
    assert quant_type("q4_k_m") == "Q4_K_M" and quant_type("f16") == "F16"
    with pytest.raises(QuantizeError) as refused:
        quant_type("Q3_XYZ")
    message = str(refused.value)
    assert "\n" not in message and "'Q3_XYZ'" in message
    assert all(name in message for name in ("F16", "Q8_0", "Q4_K_M"))
    f16 = tmp_path / "model-f16.gguf"
    assert quantized_path(f16, "Q4_K_M") == tmp_path / "model-q4_k_m.gguf" and quantized_path(f16, "F16") == f16
    with pytest.raises(QuantizeError, match="no such GGUF file"):  # before any environment is asked for
        quantize("/nonexistent/python", f16, "Q8_0")
    assert list(tmp_path.iterdir()) == []


def test_the_server_command_holds_no_setting_and_no_secret(tmp_path: Path) -> None:
    spec = LlamaSpec("/models/model-q8_0.gguf", "void", context=2048, threads=2)
    config = write_config(tmp_path / "server.json", spec, 8123, KEY)
    command = server_command("/env/bin/python", config)
    assert command == ["/env/bin/python", "-m", "llama_cpp.server", "--config_file", str(config)]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    written = json.loads(config.read_text())
    assert written["api_key"] == KEY and (written["host"], written["port"]) == ("127.0.0.1", 8123)
    (model,) = written["models"]
    assert (model["model"], model["model_alias"], model["n_ctx"]) == ("/models/model-q8_0.gguf", "void", 2048)
    assert model["chat_format"] == "chat_template.default"  # the GGUF's own template, which renders tools
    # the names the server would take over its config file are not passed on; the rest of the environment is
    env = server_env({"HOST": "0.0.0.0", "port": "9", "CONFIG_FILE": "/x.json", "PATH": "/bin"})
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1"}
    assert "api_key" not in write_config(tmp_path / "open.json", spec, 8123, None).read_text()


def recording(answers: list[dict[str, Any]]) -> tuple[httpx.Client, list[dict[str, Any]]]:
    """A client whose transport records each request body and answers the next of ``answers``."""
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=answers[min(len(bodies), len(answers)) - 1])

    return httpx.Client(transport=httpx.MockTransport(answer)), bodies


def message(content: str) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


def test_against_llama_cpp_calls_are_read_from_the_text_and_the_retry_is_a_grammar() -> None:
    call = json.dumps({"name": REPLY_TOOL_NAME, "parameters": {"text": "a post from the text"}})
    client, bodies = recording([message(call), message("that is all"), message('{"text":"forced post"}'), message("")])
    endpoint = Endpoint("http://llama.test/v1", KEY, "void", engine="llama.cpp")
    with client:
        answer = reply(client, endpoint, direct_profile("You are void."), "@ada.test: hi?", GREEDY)
        forced = agent_loop(client, endpoint, direct_profile("You are void."), "@ada.test: hi?", GREEDY, "k",
                            forced_steps=1)  # fmt: skip
    assert answer.posts == ["a post from the text"] and not answer.required_retry and answer.content == "that is all"
    first, second = bodies[0], bodies[1]
    assert first["tools"] == [REPLY_TOOL] and "grammar" not in first and "structured_outputs" not in first
    # the call goes back to the template as a call, not as text
    assert second["messages"][2] == {"role": "assistant", "content": "",
                                     "tool_calls": text_tool_calls(call)}  # fmt: skip
    assert second["messages"][3]["role"] == "tool"
    assert forced.posts == ["forced post"]
    retry = bodies[2]
    # {"text":"..."}: at most 8 punctuation marks, a word character, at most 290 more: never over 300, never "_" alone
    assert retry["grammar"].startswith('root ::= "{\\"text\\":\\"" lead{0,8} word char{0,290} "\\"}"\n')
    assert "word ::= [0-9A-Za-z]" in retry["grammar"]
    assert "structured_outputs" not in retry and retry["tool_choice"] == "none"


def test_the_llama3_text_format_is_read_as_vllm_reads_it() -> None:
    one = {"name": REPLY_TOOL_NAME, "parameters": {"text": "x"}}
    two = {"name": "other", "arguments": {"a": 1}}
    calls = text_tool_calls(f"<|python_tag|>{json.dumps(one)}; {json.dumps(two)}")
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (REPLY_TOOL_NAME, {"text": "x"}),
        ("other", {"a": 1}),
    ]
    assert text_tool_calls(f"Sure: {json.dumps(one)}") == []  # text around a call: an answer, not a call
    assert text_tool_calls('{"name": "x"}') == [] and text_tool_calls("") == []


# --- integration: a real llama.cpp server ----------------------------------------------------------------


def cli(*args: str, key: str | None = KEY, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VOID_SERVE_API_KEY", "VOID_SERVE_URL")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if key is not None:
        env["VOID_SERVE_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "void_pipeline", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def llama_world(
    curated: dict[str, Any], trained: Trained, trainer_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A data root whose current bundle is the session's trained adapter, and the f16 GGUF of its training run's
    merged model where gguf_export writes it (converted by the same converter, from the command line)."""
    root = tmp_path_factory.mktemp("llama")
    serve = DataLayout(root).agent("void").serve
    latest = curated["storage"].agent_layout.train.read_latest()
    assert latest is not None
    promotion = Promotion(latest.base_model, trained.adapter, latest.dataset, "void", "llama3_json", 8, GREEDY,
                          source={"run_dir": str(latest.run_dir)})  # fmt: skip
    make_current(serve, add_bundle(serve, promotion).version)
    f16 = serve.export(latest.run_dir.name).gguf("f16")
    f16.parent.mkdir(parents=True)
    converter = str(environments.ensure("gguf-converter"))
    python = str(trainer_bin / "python")
    merged = RunPaths(latest.run_dir).merged
    converted = run_trainer(trainer_bin, python, "-m", "void_pipeline.external.export_gguf", "convert",
                            "--converter", converter, str(merged), str(f16))  # fmt: skip
    assert converted.returncode == 0, converted.stderr[-3000:]
    heldout = pl.read_parquet(latest.dataset / "heldout.parquet")
    return {"root": root, "serve": serve, "f16": f16, "prompts": heldout["prompt"].to_list()}


@pytest.fixture(scope="module")
def llama_up(llama_world: dict[str, Any]) -> Iterator[ServerState]:
    data = ["--data", str(llama_world["root"])]
    refused = cli("serve", "up", *data, "--engine", "llama.cpp", "--quant", "Q3_XYZ")
    assert refused.returncode == 2 and "use one of F16, Q8_0" in refused.stderr, refused.stderr
    started = cli("serve", "up", *data, "--engine", "llama.cpp", "--quant", "Q8_0", "--port", str(free_port()),
                  "--max-model-len", "2048")  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    state = ServerState.read(llama_world["serve"])
    assert state is not None
    try:
        yield state
    finally:
        down = cli("serve", "down", *data)
        assert down.returncode == 0 and f"stopped the server at {state.url}" in down.stdout, down
        assert not pid_alive(state.pid) and group_members(state.pid) == []


@pytest.mark.integration
def test_a_held_out_thread_is_answered_through_llama_cpp_on_the_cpu(
    llama_up: ServerState, llama_world: dict[str, Any]
) -> None:
    serve, f16 = llama_world["serve"], llama_world["f16"]
    q8 = quantized_path(f16, "Q8_0")
    assert q8.exists() and 0 < q8.stat().st_size < f16.stat().st_size
    assert llama_up.engine == "llama.cpp" and llama_up.base_model == str(q8)

    status = cli("serve", "status", "--data", str(llama_world["root"]), "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["state"] == "up" and report["engine"] == "llama.cpp" and report["models"] == ["void"]
    # the key: in no file, log or command line; the config file that carried it is gone
    cmdline = Path(f"/proc/{llama_up.pid}/cmdline").read_bytes()
    assert KEY.encode() not in cmdline and b"llama_cpp.server" in cmdline
    assert KEY not in serve.server_state.read_text() + Path(report["log"]).read_text()
    assert not list(serve.root.glob(".llama-server-*.json"))

    endpoint = Endpoint(f"{llama_up.url}/v1", KEY, "void", engine="llama.cpp", timeout_s=300.0)
    with httpx.Client() as client:
        refused = client.get(f"{llama_up.url}/v1/models", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401
        answer = reply(client, endpoint, direct_profile("You are void."), llama_world["prompts"][0], GREEDY)
    assert answer.posts and not answer.problems(), (answer.problems(), answer.raw)
    assert all(0 < len(post) <= 300 for post in answer.posts)


@pytest.mark.integration
def test_q4_k_m_is_written_whole_beside_the_f16_and_an_unknown_type_leaves_nothing(
    llama_world: dict[str, Any],
) -> None:
    python = str(environments.ensure("llama-cpp") / "bin" / "python")
    f16 = llama_world["f16"]
    q4, made = quantize(python, f16, "Q4_K_M")
    assert q4 == quantized_path(f16, "Q4_K_M") and made["bytes"] == q4.stat().st_size < f16.stat().st_size
    assert q4.read_bytes()[:4] == b"GGUF"
    before = sorted(p.name for p in f16.parent.iterdir())
    command = [python, "-m", "void_pipeline.external.quantize_gguf", str(f16), str(f16.parent / "x.gguf"), "Q3_XYZ"]
    failed = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=False, timeout=120)
    assert failed.returncode == 1 and "no quantization type 'Q3_XYZ'" in failed.stderr
    assert sorted(p.name for p in f16.parent.iterdir()) == before
    # every type serve up offers is one the compiled llama.cpp knows
    listing = "import llama_cpp; print(' '.join(n for n in dir(llama_cpp) if n.startswith('LLAMA_FTYPE_MOSTLY_')))"
    known = subprocess.run([python, "-c", listing], capture_output=True, text=True, check=True).stdout.split()
    assert {f"LLAMA_FTYPE_MOSTLY_{t}" for t in QUANT_TYPES} <= set(known)
