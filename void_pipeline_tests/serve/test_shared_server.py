"""When one vLLM server may stand in for another (lib/serve/vllm_server.py's serves_like): the demo's run keeps
evaluation's server for the smoke test (resources/server.py's keep_running)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from void_pipeline.lib.serve.vllm_server import RunningServer, ServerSpec, serves_like
from void_pipeline.resources import server as server_module
from void_pipeline.resources.server import InferenceServer


def evaluation_spec(tmp_path: Path) -> ServerSpec:
    template = tmp_path / "adapter" / "chat_template.jinja"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text("{{ messages }}")
    return ServerSpec(
        model="/models/tiny",
        adapters={"tuned": str(tmp_path / "adapter")},
        lora_rank=8,
        chat_template=str(template),
        dtype="float32",
        max_model_len=8192,
        extra_args=("--no-enable-chunked-prefill",),
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
    )


def test_a_bundle_of_the_same_adapter_is_served_by_evaluations_server(tmp_path: Path) -> None:
    evaluation = evaluation_spec(tmp_path)
    copy = tmp_path / "bundle" / "chat_template.jinja"  # the bundle's own copy: same bytes, another path
    copy.parent.mkdir()
    copy.write_text("{{ messages }}")
    bundle = replace(evaluation, adapters={"void-demo": str(tmp_path / "bundle")}, chat_template=str(copy))
    assert serves_like(evaluation, bundle)


def test_another_base_template_engine_or_a_larger_rank_needs_its_own_server(tmp_path: Path) -> None:
    evaluation = evaluation_spec(tmp_path)
    other_template = tmp_path / "other.jinja"
    other_template.write_text("{{ other }}")
    assert not serves_like(evaluation, replace(evaluation, model="/models/other"))
    assert not serves_like(evaluation, replace(evaluation, chat_template=str(other_template)))
    assert not serves_like(evaluation, replace(evaluation, chat_template=None))
    assert not serves_like(evaluation, replace(evaluation, tool_call_parser="hermes"))
    assert not serves_like(evaluation, replace(evaluation, dtype="bfloat16"))
    assert not serves_like(evaluation, replace(evaluation, max_model_len=4096))
    assert not serves_like(evaluation, replace(evaluation, lora_rank=64))  # slot 8 cannot hold rank 64
    assert serves_like(evaluation, replace(evaluation, lora_rank=4))  # slot 8 holds rank 4
    assert not serves_like(evaluation, replace(evaluation, port=8000))  # a fixed port is another server
    assert not serves_like(replace(evaluation, adapters={}), evaluation)  # started without LoRA: none can be loaded


class FakeServers:
    """vllm_server and load_adapter as the resource calls them: what started, what was loaded, what stopped."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @contextlib.contextmanager
    def vllm_server(self, python: str, spec: ServerSpec, log_path: Path, *args: Any) -> Iterator[RunningServer]:
        self.events.append(f"start {sorted(spec.adapters)}")
        try:
            yield RunningServer("http://127.0.0.1:1", "key", ["base", *spec.adapters], 1, log_path, 0.0)
        finally:
            self.events.append("stop")

    def load_adapter(self, url: str, api_key: str | None, name: str, path: str) -> None:
        self.events.append(f"load {name}")


@pytest.mark.parametrize("keep_running", [True, False])
def test_a_run_starts_one_server_for_its_steps_only_when_asked_to_keep_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_running: bool
) -> None:
    fake = FakeServers()
    monkeypatch.setattr(server_module, "vllm_server", fake.vllm_server)
    monkeypatch.setattr(server_module, "load_adapter", fake.load_adapter)
    listed = httpx.Response(200, json={"data": [{"id": "base"}, {"id": "tuned"}, {"id": "void-demo"}]})
    monkeypatch.setattr(httpx, "get", lambda *a, **k: listed)
    evaluation = evaluation_spec(tmp_path)
    smoke = replace(evaluation, adapters={"void-demo": str(tmp_path / "bundle")})
    seen: list[list[str]] = []

    @dg.asset
    def eval_generations(server: InferenceServer) -> None:
        with server.serving(evaluation, tmp_path / "eval.log") as running:
            seen.append(running.models)

    @dg.asset(deps=[eval_generations])
    def served_model(server: InferenceServer) -> None:
        with server.serving(smoke, tmp_path / "smoke.log") as running:
            seen.append(running.models)
        fake.events.append("smoke done")

    result = dg.materialize(
        [eval_generations, served_model], resources={"server": InferenceServer(python="/x", keep_running=keep_running)}
    )
    assert result.success
    if keep_running:  # one start; the bundle's adapter loaded into it; stopped when the run ends
        assert fake.events == ["start ['tuned']", "load void-demo", "smoke done", "stop"]
        assert seen[1] == ["base", "tuned", "void-demo"]
    else:
        assert fake.events == ["start ['tuned']", "stop", "start ['void-demo']", "stop", "smoke done"]
