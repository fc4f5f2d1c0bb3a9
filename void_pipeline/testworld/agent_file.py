"""The demo agent as a Letta Agent File (``void_pipeline/agents/void-demo.af``): the demo snapshot's system prompt and
blocks, block descriptions and limits, and one custom tool — the reply tool, our own code — in the layout Letta
exports and imports (``agents[]`` referencing top-level ``blocks[]`` and ``tools[]`` by id). Like an exported agent
it holds its context: one system message, compiled as Letta compiles it when the file was written (an agent without
one cannot run after import; ``letta import`` has Letta compile it again).

The tool's ``json_schema`` is what Letta derives from the source (the docstring's description, one property per
argument with the docstring's ``Args`` line, the arguments without a default required); the Letta test imports this
file into a real server and compares what the server sends with what we render from it.

    python -m void_pipeline.testworld agent-file [OUT]     (re)write the shipped file from the demo snapshot
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from void_pipeline.lib.curate.context import load_snapshot
from void_pipeline.lib.curate.letta import STAND_IN_AGENT_ID, MemoryBlock, compile_system
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL_NAME
from void_pipeline.lib.curate.request import RequestProfile
from void_pipeline.lib.files import write_text_atomic

PACKAGE = Path(__file__).resolve().parents[1]
DEMO_SNAPSHOT = PACKAGE / "context_snapshots" / "demo"
DEMO_AGENT_FILE = PACKAGE / "agents" / "void-demo.af"
BLOCK_LIMIT = 20_000
WRITTEN = datetime(2026, 2, 13, tzinfo=UTC)  # the demo snapshot's date: when its stored system message was compiled
# The demo model's sequence is 4,096 tokens: the agent's system text is the snapshot's opening paragraphs up to this
# many characters, so that Letta's compiled message (blocks, metadata) leaves room for memory within the budget.
SYSTEM_CHARS = 1_500

# What each block is for, in our words (Letta shows a block's description beside its value).
DESCRIPTIONS = {
    "void-persona": "Who void is: its voice, its stance, how it describes itself.",
    "communication_guidelines": "How void writes: register, length, what it avoids.",
    "operational_protocols": "Standing procedures void follows when it answers and when it acts.",
    "tool_use_guide": "When and how to use each tool.",
    "known_bots": "Accounts known to be automated, and how to treat them.",
    "zeitgeist": "What the network is talking about lately.",
}

REPLY_TOOL_SOURCE = '''def add_post_to_bluesky_reply_thread(text: str, lang: str = "en-US") -> str:
    """Add one post to the reply thread the handler is answering.

    Each call becomes the next post of the reply, in order: call it again to continue the thread. The handler posts
    the queued posts after the turn ends.

    Args:
        text: The post's text, at most 300 characters.
        lang: The post's language as a BCP-47 tag.

    Returns:
        str: Confirmation that the post was queued.
    """
    if not text.strip():
        raise ValueError("a post needs text")
    if len(text) > 300:
        raise ValueError(f"the post is {len(text)} characters, over 300")
    return f"Post queued for the reply thread ({len(text)} characters)."
'''

REPLY_TOOL_SCHEMA: dict[str, Any] = {
    "name": REPLY_TOOL_NAME,
    "description": "Add one post to the reply thread the handler is answering.\n\nEach call becomes the next post of "
    "the reply, in order: call it again to continue the thread. The handler posts\nthe queued posts after the turn "
    "ends.",
    "parameters": {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "The post's text, at most 300 characters."},
            "lang": {"type": "string", "description": "The post's language as a BCP-47 tag."},
        },
        "required": ["text"],
    },
}


def opening(text: str, limit: int) -> str:
    """The whole paragraphs of ``text`` that fit in ``limit`` characters (at least the first)."""
    paragraphs = text.split("\n\n")
    kept = [paragraphs[0]]
    for paragraph in paragraphs[1:]:
        if len("\n\n".join([*kept, paragraph])) > limit:
            break
        kept.append(paragraph)
    return "\n\n".join(kept)


def demo_agent_file(snapshot_dir: Path = DEMO_SNAPSHOT) -> dict[str, Any]:
    snapshot = load_snapshot(snapshot_dir)
    blocks = [
        {
            "id": f"block-{n}",
            "label": block.label,
            "value": block.text,
            "limit": BLOCK_LIMIT,
            "description": DESCRIPTIONS.get(block.label, f"void's notes: {block.label.replace('_', ' ')}."),
            "read_only": False,
            "metadata": {"priority": block.priority},  # the snapshot manifest's: what trimming keeps first
        }
        for n, block in enumerate(snapshot.blocks)
    ]
    tool = {
        "id": "tool-0",
        "name": REPLY_TOOL_NAME,
        "tool_type": "custom",
        "source_type": "python",
        "description": REPLY_TOOL_SCHEMA["description"],
        "source_code": REPLY_TOOL_SOURCE,
        "json_schema": REPLY_TOOL_SCHEMA,
        "tags": [],
        "return_char_limit": 6000,
    }
    system = opening(snapshot.system_prompt, SYSTEM_CHARS)
    agent = {
        "id": "agent-0",
        "name": "void-demo",
        "agent_type": "letta_v1_agent",
        "description": "The demo's stand-in for void: a synthetic persona and memory of the same shape.",
        "system": system,
        "block_ids": [b["id"] for b in blocks],
        "tool_ids": [tool["id"]],
        "tool_rules": [],
        "include_base_tools": False,
        "include_base_tool_rules": False,
        "message_buffer_autoclear": True,
        "timezone": "UTC",
        "tags": [],
        **stored_context(system, [memory_of(b) for b in blocks], []),
    }
    return {
        "agents": [agent],
        "groups": [],
        "blocks": blocks,
        "files": [],
        "sources": [],
        "tools": [tool],
        "mcp_servers": [],
        "metadata": {},
    }


def memory_of(block: dict[str, Any]) -> MemoryBlock:
    return MemoryBlock(block["label"], block["value"], block["limit"], block.get("description"), block["read_only"])


def stored_context(system: str, blocks: list[MemoryBlock], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """An agent's in-context messages as an export holds them: its system message, compiled at WRITTEN."""
    text = compile_system(system, blocks, rules, STAND_IN_AGENT_ID, WRITTEN)
    message = {
        "id": "message-0",
        "type": "message",
        "role": "system",
        "agent_id": "agent-0",
        "content": [{"type": "text", "text": text}],
        "created_at": WRITTEN.isoformat(),
    }
    return {"in_context_message_ids": ["message-0"], "messages": [message]}


def agent_file_for(profile: RequestProfile, source: dict[str, Any], tool_rules: list[dict[str, Any]]) -> dict[str, Any]:
    """``source`` (an agent file) as the agent a request profile describes: its blocks as the profile keeps them
    (a trimmed window's), ``tool_rules`` its rules. Letta then sends what the profile renders."""
    by_label = {b.label: b for b in profile.blocks}
    blocks = [
        {**block, "value": by_label[block["label"]].value} for block in source["blocks"] if block["label"] in by_label
    ]
    agent = {
        **source["agents"][0],
        "block_ids": [b["id"] for b in blocks],
        "tool_rules": tool_rules,
        **stored_context(profile.system, [memory_of(b) for b in blocks], tool_rules),
    }
    return {**source, "agents": [agent], "blocks": blocks}


def write_demo_agent_file(out: Path = DEMO_AGENT_FILE) -> Path:
    write_text_atomic(out, json.dumps(demo_agent_file(), indent=2, ensure_ascii=False) + "\n")
    return out
