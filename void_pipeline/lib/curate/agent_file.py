"""A Letta Agent File (``.af``): the JSON export of an agent, read as the context window's source.

What is read (Letta's export format; older exports inline what newer ones reference by id):

- ``agents[0]``: ``name``, ``system`` (the agent's base instructions), ``agent_type``, its blocks — ``block_ids``
  into the file's top-level ``blocks[]``, or inline ``memory_blocks`` / ``core_memory`` — each with ``label``,
  ``value``, ``limit``, ``description``, ``read_only`` and, in its ``metadata``, an optional ``priority`` (which
  blocks a trimmed context window keeps first; Letta keeps block metadata and does not show it); its tools — ``tool_ids`` into top-level ``tools[]``, or
  inline ``tools`` — each with ``name`` and ``json_schema``; ``tool_rules``; ``llm_config``; ``timezone``;
- the agent must have the reply tool: an agent that cannot post is refused, naming the tools it has.

Every problem is one line naming the file and the field (``agents[0].blocks[2].limit``); nothing is guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from void_pipeline.lib.curate.letta import MemoryBlock
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL_NAME
from void_pipeline.lib.files import NotText, read_utf8

# The agent types whose request this project renders (lib/curate/letta.py); others are refused by name.
AGENT_TYPES = ("letta_v1_agent", "memgpt_agent", "memgpt_v2_agent")
DEFAULT_BLOCK_LIMIT = 100_000  # what Letta gives a block that names no limit


class AgentFileError(ValueError):
    """An agent file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class AgentBlock(MemoryBlock):
    """A memory block as the agent file holds it: what Letta shows (MemoryBlock), and a priority of ours."""

    priority: int | None = None  # metadata.priority: which blocks a trimmed window keeps first (lower first)


@dataclass(frozen=True)
class AgentTool:
    name: str
    json_schema: dict[str, Any]  # {"name", "description", "parameters"} as Letta stores it
    tool_type: str | None = None


@dataclass(frozen=True)
class AgentFile:
    path: str
    name: str
    agent_type: str
    system: str
    blocks: tuple[AgentBlock, ...]
    tools: tuple[AgentTool, ...]
    tool_rules: tuple[dict[str, Any], ...] = ()
    llm_config: dict[str, Any] = field(default_factory=dict)
    timezone: str | None = None

    def tool_names(self) -> list[str]:
        return [tool.name for tool in self.tools]


def _referenced(
    where: str, agent: dict[str, Any], ids_key: str, inline_keys: tuple[str, ...], pool: list[Any], problems: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """The agent's items: by id from the file's top-level list, else inline; each with its field path."""
    if isinstance(agent.get(ids_key), list):
        by_id = {item.get("id"): (n, item) for n, item in enumerate(pool) if isinstance(item, dict)}
        found = []
        for n, ref in enumerate(agent[ids_key]):
            if ref not in by_id:
                problems.append(f"{where}.{ids_key}[{n}] {ref!r} is not in the file")
                continue
            index, item = by_id[ref]
            found.append((f"{ids_key.removesuffix('_ids')}s[{index}]", item))
        return found
    for key in inline_keys:
        if isinstance(agent.get(key), list):
            return [(f"{where}.{key}[{n}]", item) for n, item in enumerate(agent[key])]
    return []


def _block(path: str, data: Any, problems: list[str]) -> AgentBlock | None:
    if not isinstance(data, dict):
        problems.append(f"{path} is not an object")
        return None
    label, value, limit = data.get("label"), data.get("value", ""), data.get("limit", DEFAULT_BLOCK_LIMIT)
    description = data.get("description")
    if not isinstance(label, str) or not label:
        problems.append(f"{path}.label is missing")
        return None
    if not isinstance(value, str):
        problems.append(f"{path}.value ({label}) is not text")
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        problems.append(f"{path}.limit ({label}) is not a positive whole number")
        return None
    if len(value) > limit:
        problems.append(f"{path}.value ({label}) is {len(value):,} characters, over its limit of {limit:,}")
    if description is not None and not isinstance(description, str):
        problems.append(f"{path}.description ({label}) is not text")
        description = None
    metadata: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
    priority = metadata.get("priority")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        problems.append(f"{path}.metadata.priority ({label}) is not a whole number")
        priority = None
    return AgentBlock(label, value, limit, description, bool(data.get("read_only", False)), priority)


def _tool(path: str, data: Any, problems: list[str]) -> AgentTool | None:
    if not isinstance(data, dict):
        problems.append(f"{path} is not an object")
        return None
    schema = data.get("json_schema")
    name = data.get("name") or (schema.get("name") if isinstance(schema, dict) else None)
    if not isinstance(name, str) or not name:
        problems.append(f"{path}.name is missing")
        return None
    if not isinstance(schema, dict) or not isinstance(schema.get("parameters"), dict):
        problems.append(f"{path}.json_schema ({name}) is missing or has no parameters")
        return None
    return AgentTool(name, {**schema, "name": schema.get("name", name)}, data.get("tool_type"))


def parse_agent_file(data: Any, path: str) -> AgentFile:
    """The first agent of an agent file's JSON; AgentFileError naming ``path`` and the field otherwise."""
    if not isinstance(data, dict):
        raise AgentFileError(f"{path}: not a Letta agent file (a JSON object with agents[])")
    agents = data.get("agents")
    if not isinstance(agents, list) or not agents:
        raise AgentFileError(f"{path}: agents is missing or empty: the file holds no agent")
    agent = agents[0]
    if not isinstance(agent, dict):
        raise AgentFileError(f"{path}: agents[0] is not an object")
    problems: list[str] = []
    agent_type = agent.get("agent_type")
    if agent_type not in AGENT_TYPES:
        problems.append(f"agents[0].agent_type {agent_type!r} is not one of {', '.join(AGENT_TYPES)}")
    system = agent.get("system")
    if not isinstance(system, str) or not system.strip():
        problems.append("agents[0].system is missing")
    top_blocks: list[Any] = data["blocks"] if isinstance(data.get("blocks"), list) else []
    top_tools: list[Any] = data["tools"] if isinstance(data.get("tools"), list) else []
    block_items = _referenced("agents[0]", agent, "block_ids", ("memory_blocks", "core_memory"), top_blocks, problems)
    tool_items = _referenced("agents[0]", agent, "tool_ids", ("tools",), top_tools, problems)
    blocks = [b for b in (_block(where, item, problems) for where, item in block_items) if b]
    tools = [t for t in (_tool(where, item, problems) for where, item in tool_items) if t]
    labels = [b.label for b in blocks]
    if duplicated := sorted({label for label in labels if labels.count(label) > 1}):
        problems.append(f"agents[0]: block label(s) {', '.join(duplicated)} appear twice")
    if not blocks and not problems:
        problems.append("agents[0] has no memory blocks")
    if not problems and REPLY_TOOL_NAME not in [t.name for t in tools]:
        have = ", ".join(t.name for t in tools) or "none"
        problems.append(f"agents[0] has no {REPLY_TOOL_NAME} tool, so it cannot post (its tools: {have})")
    if problems:
        raise AgentFileError(f"{path}: " + "; ".join(problems))
    rules: list[Any] = agent["tool_rules"] if isinstance(agent.get("tool_rules"), list) else []
    llm: dict[str, Any] = agent["llm_config"] if isinstance(agent.get("llm_config"), dict) else {}
    timezone = agent.get("timezone") if isinstance(agent.get("timezone"), str) else None
    return AgentFile(
        path,
        str(agent.get("name") or Path(path).stem),
        str(agent_type),
        str(system),
        tuple(blocks),
        tuple(tools),
        tuple(r for r in rules if isinstance(r, dict)),
        dict(llm),
        timezone,
    )


def load_agent_file(path: Path) -> AgentFile:
    """An ``.af`` file from disk (see parse_agent_file)."""
    try:
        text = read_utf8(path, "agent file")
    except NotText as err:
        raise AgentFileError(str(err)) from err
    except OSError as err:
        raise AgentFileError(f"{path}: {err.strerror or err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise AgentFileError(f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from err
    return parse_agent_file(data, str(path))
