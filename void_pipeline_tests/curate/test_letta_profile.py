"""The letta runtime profile, offline: Letta Agent Files read (and refused) field by field, the system message compiled
as Letta 0.16.8 compiles it (goldens written out by hand from its public code), tool results and the loop's shape.
The same renderings are held against a real Letta server in serve/test_letta_runtime.py."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from void_pipeline.lib.curate.agent_file import AgentFileError, load_agent_file, parse_agent_file
from void_pipeline.lib.curate.context import load_context_source
from void_pipeline.lib.curate.dataset import answer_messages, format_row
from void_pipeline.lib.curate.letta import MemoryBlock, compile_system, strict_schema
from void_pipeline.lib.curate.request import DEFAULT_REPLY_RESULT, RequestProfile
from void_pipeline.lib.curate.runtime import letta_tools
from void_pipeline.testworld.agent_file import DEMO_AGENT_FILE, REPLY_TOOL_SOURCE, demo_agent_file

WHEN = datetime(2026, 3, 4, 17, 5, 9, tzinfo=UTC)
SCHEMA = {
    "name": "add_post_to_bluesky_reply_thread",
    "description": "Post one reply.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


def agent_file(**agent: Any) -> dict[str, Any]:
    base = {
        "id": "agent-0",
        "name": "a",
        "agent_type": "letta_v1_agent",
        "system": "Be brief.",
        "block_ids": ["block-0", "block-1"],
        "tool_ids": ["tool-0"],
    }
    return {
        "agents": [{**base, **agent}],
        "blocks": [
            {"id": "block-0", "label": "persona", "value": "I am a.", "limit": 100, "description": "Who I am."},
            {"id": "block-1", "label": "notes", "value": "", "limit": 50, "read_only": True},
        ],
        "tools": [{"id": "tool-0", "name": SCHEMA["name"], "json_schema": SCHEMA}],
    }


def test_the_system_message_is_compiled_as_letta_compiles_it() -> None:
    blocks = [
        MemoryBlock("persona", "I am a.\nI post.", 100, "Who I am."),
        MemoryBlock("notes", "", 50, None, read_only=True),
    ]
    rules = [{"type": "exit_loop", "tool_name": "send"}, {"type": "continue_loop", "tool_name": "post"}]
    got = compile_system("Be brief.", blocks, rules, "agent-123", WHEN, "America/New_York", 7)
    assert got == (
        "Be brief.\n\n"
        "<memory_blocks>\nThe following memory blocks are currently engaged in your core memory unit:\n\n"
        "<persona>\n<description>\nWho I am.\n</description>\n"
        "<metadata>\n- chars_current=15\n- chars_limit=100\n</metadata>\n"
        "<value>\nI am a.\nI post.\n</value>\n</persona>\n\n"
        "<notes>\n<description>\n\n</description>\n"
        "<metadata>\n- read_only=true\n- chars_current=0\n- chars_limit=50\n</metadata>\n"
        "<value>\n\n</value>\n</notes>\n\n</memory_blocks>\n\n"
        "<tool_usage_rules>\nThe following constraints define rules for tool usage and guide desired behavior. These "
        "rules must be followed to ensure proper tool execution and workflow. A single response may contain multiple "
        "tool calls.\n\n"
        "<tool_rule>\npost requires continuing your response when called\n</tool_rule>\n"
        "<tool_rule>\nsend ends your response (yields control) when called\n</tool_rule>\n</tool_usage_rules>\n\n"
        "<memory_metadata>\n- AGENT_ID: agent-123\n- CONVERSATION_ID: default\n"
        "- System prompt last recompiled: 2026-03-04 12:05:09 PM EST-0500\n"
        "- 7 previous messages between you and the user are stored in recall memory\n</memory_metadata>"
    )
    # the memory goes where the system text names {CORE_MEMORY}, and nowhere else
    placed = compile_system("Top.\n{CORE_MEMORY}\nBottom.", [], [], "agent-1", WHEN)
    assert placed == (
        "Top.\n\n\n<memory_metadata>\n- AGENT_ID: agent-1\n- CONVERSATION_ID: default\n"
        "- System prompt last recompiled: 2026-03-04 05:05:09 PM UTC+0000\n"
        "- 0 previous messages between you and the user are stored in recall memory\n</memory_metadata>\nBottom."
    )


def test_an_agent_file_is_read_with_its_blocks_tools_and_type(tmp_path: Path) -> None:
    path = tmp_path / "a.af"
    path.write_text(json.dumps(agent_file(tool_rules=[{"type": "exit_loop", "tool_name": "x"}])))
    agent = load_agent_file(path)
    assert (agent.agent_type, agent.system, agent.tool_names()) == ("letta_v1_agent", "Be brief.", [SCHEMA["name"]])
    assert [(b.label, b.limit, b.description, b.read_only) for b in agent.blocks] == [
        ("persona", 100, "Who I am.", False),
        ("notes", 50, None, True),
    ]
    snapshot = load_context_source(path)
    assert snapshot.persona_block == "persona" and [b.priority for b in snapshot.blocks] == [0, 2]
    assert letta_tools(snapshot) == ({"type": "function", "function": SCHEMA},)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(agents=[]), "agents is missing or empty"),
        (lambda d: d["agents"][0].update(agent_type="react_agent"), "agents[0].agent_type 'react_agent' is not one of"),
        (
            lambda d: d["tools"][0].pop("json_schema"),
            "tools[0].json_schema (add_post_to_bluesky_reply_thread) is missing",
        ),
        (
            lambda d: d["blocks"][0].update(value="x" * 101),
            "blocks[0].value (persona) is 101 characters, over its limit",
        ),
        (lambda d: d["agents"][0].update(block_ids=["block-9"]), "agents[0].block_ids[0] 'block-9' is not in the file"),
        (
            lambda d: d["tools"][0].update(name="memory", json_schema={**SCHEMA, "name": "memory"}),
            "has no add_post_to_bluesky_reply_thread tool, so it cannot post (its tools: memory)",
        ),
    ],
)
def test_a_malformed_agent_file_is_one_line_naming_the_file_and_the_field(
    tmp_path: Path, change: Any, message: str
) -> None:
    data = agent_file()
    change(data)
    path = tmp_path / "bad.af"
    path.write_text(json.dumps(data))
    with pytest.raises(AgentFileError) as raised:
        load_agent_file(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)
    path.write_text("{not json")
    with pytest.raises(AgentFileError, match=r"bad\.af is not valid JSON: .* line 1"):
        load_agent_file(path)


def profile(agent_type: str = "letta_v1_agent") -> RequestProfile:
    snapshot_file = parse_agent_file(agent_file(agent_type=agent_type), "a.af")
    blocks = tuple(MemoryBlock(b.label, b.value, b.limit, b.description, b.read_only) for b in snapshot_file.blocks)
    tools = ({"type": "function", "function": SCHEMA},)
    return RequestProfile("letta", "Be brief.", tools, blocks, agent_type=agent_type, timezone="UTC")


def test_a_letta_row_is_the_loop_letta_runs_at_the_examples_time() -> None:
    row = format_row({"prompt": "@ada: hi?", "calls": ["one", "two"], "created_at": WHEN}, "openai", None, profile())
    system, user, *answer = row["messages"]
    assert system["content"] == profile().system_message(WHEN) and "05:05:09 PM UTC+0000" in system["content"]
    assert user == {"role": "user", "content": "@ada: hi?"}
    assert [m["role"] for m in answer] == ["assistant", "tool", "assistant", "tool", "assistant"]
    assert answer[0]["tool_calls"][0]["function"]["arguments"] == {"text": "one"}
    assert answer[1]["content"] == (
        '{\n  "status": "OK",\n  "message": "Post queued for the reply thread (3 characters).",\n'
        '  "time": "2026-03-04 05:05:09 PM UTC+0000"\n}'
    )
    assert answer[-1] == {"role": "assistant", "content": ""}  # the turn ends on an answer without a call
    assert row["tools"] == [{"type": "function", "function": SCHEMA}]


def test_memgpt_types_carry_thinking_and_heartbeats_and_end_on_the_last_call() -> None:
    answer = answer_messages(["one", "two"], "why", profile("memgpt_v2_agent"), WHEN)
    assert [m["role"] for m in answer] == ["assistant", "tool", "assistant", "tool"]
    first, second = (m["tool_calls"][0]["function"]["arguments"] for m in answer[::2])
    assert first == {"thinking": "why", "text": "one", "request_heartbeat": True}
    assert second == {"thinking": "", "text": "two", "request_heartbeat": False}
    schema = letta_tools(load_context_source_from(agent_file(agent_type="memgpt_agent")))[0]["function"]
    assert list(schema["parameters"]["properties"]) == ["thinking", "text", "request_heartbeat"]
    assert schema["parameters"]["required"] == ["thinking", "text", "request_heartbeat"]


def load_context_source_from(data: dict[str, Any]) -> Any:
    from void_pipeline.lib.curate.context import snapshot_from_agent_file

    return snapshot_from_agent_file(parse_agent_file(data, "a.af"), WHEN.date())


def test_the_shipped_demo_agent_file_is_the_builders_and_its_tool_returns_the_profiles_result() -> None:
    assert json.loads(DEMO_AGENT_FILE.read_text()) == demo_agent_file()  # make agent-file rewrites it
    namespace: dict[str, Any] = {}
    exec(REPLY_TOOL_SOURCE, namespace)  # the tool Letta runs for the demo agent
    assert namespace["add_post_to_bluesky_reply_thread"]("hello") == DEFAULT_REPLY_RESULT.format(chars=5)
    with pytest.raises(ValueError, match="over 300"):
        namespace["add_post_to_bluesky_reply_thread"]("x" * 301)


def test_letta_import_refuses_an_agent_that_cannot_post_before_asking_letta(tmp_path: Path) -> None:
    from void_pipeline_tests.support.cli import pipeline_cli

    data = agent_file()
    data["tools"][0].update(name="memory", json_schema={**SCHEMA, "name": "memory"})
    path = tmp_path / "handler.af"
    path.write_text(json.dumps(data))
    common = ["--letta-url", "http://127.0.0.1:9", "--endpoint", "http://127.0.0.1:9", "--model", "m"]
    refused = pipeline_cli("letta", "import", str(path), *common, "--context-window", "100")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "has no add_post_to_bluesky_reply_thread tool, so it cannot post (its tools: memory)" in refused.stderr
    down = pipeline_cli("letta", "switch", "agent-1", *common, "--context-window", "100")
    assert down.returncode == 1 and "cannot connect to Letta at http://127.0.0.1:9" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_strict_model_settings_close_the_schema_and_make_optional_arguments_nullable() -> None:
    schema = {
        "name": "post",
        "description": "Post.",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "d"},
                "lang": {"type": "string", "description": "l"},
                "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
            },
            "required": ["text"],
        },
    }
    assert strict_schema(schema) == {
        "name": "post",
        "description": "Post.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "d"},
                "lang": {"type": ["string", "null"], "description": "l"},
                "tags": {
                    "type": ["array", "null"],
                    "items": {
                        "type": "object",
                        "properties": {"k": {"type": "string"}},
                        "additionalProperties": False,
                        "required": ["k"],
                    },
                },
            },
            "required": ["text", "lang", "tags"],
            "additionalProperties": False,
        },
    }
    strict = replace(profile(), strict=True)
    assert (
        strict.offered_tools()[0]["function"] == strict_schema(SCHEMA)
        and profile().offered_tools()[0]["function"] == SCHEMA
    )
    row = format_row({"prompt": "p", "calls": ["one"], "created_at": WHEN}, "openai", None, strict)
    assert row["tools"] == [{"type": "function", "function": strict_schema(SCHEMA)}]  # the model sees what Letta sends


def test_the_context_preview_reads_an_agent_file_as_letta_compiles_it() -> None:
    from void_pipeline_tests.support.cli import pipeline_cli

    shown = pipeline_cli("context", "--agent-file", str(DEMO_AGENT_FILE), "--budget", "2048", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["runtime"], data["agent_type"]) == ("letta", "letta_v1_agent")
    trimmed = data["windows"]["trimmed"]
    assert trimmed["tokens"] <= 2048 and "<memory_metadata>\n- AGENT_ID: " in trimmed["text"]
    assert {b["label"]: b["status"] for b in trimmed["blocks"]}["void-persona"] in {"kept", "cut"}
    direct = pipeline_cli("context", "--agent-file", str(DEMO_AGENT_FILE), "--budget", "2048", "--runtime", "direct")
    assert direct.returncode == 0 and "the system message as direct sends it" in direct.stdout
