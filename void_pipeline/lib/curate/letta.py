"""The ``letta`` runtime profile: the request Letta sends the model for an agent, rendered by our own code.

Matched against the Letta server 0.16.8 (PyPI ``letta``; the last release with the V1 REST API) — read from its
public code, checked against the real server (void_pipeline_tests/serve/test_letta_runtime.py). The system message
Letta compiles for ``letta_v1_agent``, ``memgpt_agent`` and ``memgpt_v2_agent`` alike:

- the agent's ``system`` text as it is; the memory goes where it names ``{CORE_MEMORY}``, else after it, separated
  by a blank line;
- the memory: ``<memory_blocks>``, the line ``MEMORY_INTRO`` and a blank line, then per block (in the agent's
  order, empty ones too) ``<label>`` holding ``<description>`` (its own lines), ``<metadata>`` (``- read_only=true``
  when so, ``- chars_current=N`` — the value's length in code points —, ``- chars_limit=N``) and ``<value>``, blocks
  separated by a blank line, then ``</memory_blocks>``;
- tool rules that carry a prompt, as ``<tool_usage_rules>`` (a fixed description, a blank line, the rules' lines);
- a blank line and ``<memory_metadata>``: the agent's id, the conversation (``default``), when the prompt was last
  recompiled (``%Y-%m-%d %I:%M:%S %p %Z%z`` in the agent's timezone), how many earlier messages recall memory holds.

Times and ids differ per request; rendering takes them as arguments (training: the example's own time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

LETTA_VERSION = "letta 0.16.8"
CORE_MEMORY = "{CORE_MEMORY}"
MEMORY_INTRO = "The following memory blocks are currently engaged in your core memory unit:"
TOOL_RULES_DESCRIPTION = (
    "The following constraints define rules for tool usage and guide desired behavior. These rules must be followed "
    "to ensure proper tool execution and workflow. A single response may contain multiple tool calls."
)
TIME_FORMAT = "%Y-%m-%d %I:%M:%S %p %Z%z"
DEFAULT_TIMEZONE = "UTC"
# An agent id of Letta's shape, for rows rendered before the agent exists on a server (training).
STAND_IN_AGENT_ID = "agent-00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class MemoryBlock:
    label: str
    value: str
    limit: int
    description: str | None = None
    read_only: bool = False


def memory_blocks(blocks: Sequence[MemoryBlock]) -> str:
    """The ``<memory_blocks>`` section ('' for an agent without blocks)."""
    if not blocks:
        return ""
    parts = []
    for block in blocks:
        metadata = "\n- read_only=true" if block.read_only else ""
        metadata += f"\n- chars_current={len(block.value)}\n- chars_limit={block.limit}\n"
        parts.append(
            f"<{block.label}>\n<description>\n{block.description or ''}\n</description>\n"
            f"<metadata>{metadata}</metadata>\n<value>\n{block.value}\n</value>\n</{block.label}>\n"
        )
    return f"<memory_blocks>\n{MEMORY_INTRO}\n\n" + "\n".join(parts) + "\n</memory_blocks>"


def rule_prompt(rule: dict[str, Any]) -> str | None:
    """The line a tool rule adds to the system message (None: the rule adds none)."""
    kind, tool = rule.get("type"), rule.get("tool_name")
    children = ", ".join(rule.get("children") or [])
    prompts = {
        "exit_loop": f"<tool_rule>\n{tool} ends your response (yields control) when called\n</tool_rule>",
        "continue_loop": f"<tool_rule>\n{tool} requires continuing your response when called\n</tool_rule>",
        "constrain_child_tools": f"<tool_rule>\nAfter using {tool}, you must use one of these tools: {children}\n"
        "</tool_rule>",
        "parent_last_tool": f"<tool_rule>\n{children} can only be used after {tool}\n</tool_rule>",
        "conditional": f"<tool_rule>\n{tool} will determine which tool to use next based on its output\n</tool_rule>",
        "max_count_per_step": f"<tool_rule>\n{tool}: at most {rule.get('max_count_limit')} use(s) per response\n"
        "</tool_rule>",
    }
    return prompts.get(str(kind))


# Letta gathers rules in groups (first-run, continue, child-like, parent, exit) and lists their prompts group by
# group, each group in the agent's order; required-before-exit rules are not listed at all.
RULE_GROUPS = (
    ("run_first",),
    ("continue_loop",),
    ("constrain_child_tools", "conditional", "max_count_per_step"),
    ("parent_last_tool",),
    ("exit_loop",),
)


def tool_usage_rules(rules: Sequence[dict[str, Any]]) -> str:
    """The ``<tool_usage_rules>`` section, with its leading blank line ('' when no rule carries a prompt)."""
    ordered = [r for group in RULE_GROUPS for r in rules if r.get("type") in group]
    prompts = [p for p in (rule_prompt(r) for r in ordered) if p]
    if not prompts:
        return ""
    return f"\n\n<tool_usage_rules>\n{TOOL_RULES_DESCRIPTION}\n\n" + "\n".join(prompts) + "\n</tool_usage_rules>"


def letta_time(when: datetime, timezone: str | None) -> str:
    """``when`` as Letta writes times, in the agent's timezone (UTC needs no tz database: slim images lack one)."""
    zone = UTC if (timezone or DEFAULT_TIMEZONE) == "UTC" else ZoneInfo(str(timezone))
    return when.astimezone(zone).strftime(TIME_FORMAT)


def memory_metadata(agent_id: str, recompiled: datetime, timezone: str | None, previous_messages: int) -> str:
    return "\n".join(
        [
            "<memory_metadata>",
            f"- AGENT_ID: {agent_id}",
            "- CONVERSATION_ID: default",
            f"- System prompt last recompiled: {letta_time(recompiled, timezone)}",
            f"- {previous_messages} previous messages between you and the user are stored in recall memory",
            "</memory_metadata>",
        ]
    )


def compile_system(
    system: str,
    blocks: Sequence[MemoryBlock],
    rules: Sequence[dict[str, Any]],
    agent_id: str,
    recompiled: datetime,
    timezone: str | None = None,
    previous_messages: int = 0,
) -> str:
    """The system message Letta sends for an agent with this system text, blocks and tool rules."""
    memory = memory_blocks(blocks) + tool_usage_rules(rules)
    memory += "\n\n" + memory_metadata(agent_id, recompiled, timezone, previous_messages)
    if CORE_MEMORY not in system:
        system += "\n\n" + CORE_MEMORY
    return system.replace(CORE_MEMORY, memory)


def strict_property(prop: dict[str, Any]) -> dict[str, Any]:
    """One property under strict mode: nested objects closed and fully required, arrays' items likewise."""
    if "anyOf" in prop:
        return {**prop, "anyOf": [strict_property(option) for option in prop["anyOf"]]}
    if prop.get("type") == "object" and "properties" in prop:
        properties = {key: strict_property(value) for key, value in prop["properties"].items()}
        return {**prop, "properties": properties, "additionalProperties": False, "required": list(properties)}
    if prop.get("type") == "array" and "items" in prop:
        return {**prop, "items": strict_property(prop["items"])}
    return prop


def nullable(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional property as strict mode keeps it optional: null among its types."""
    kind = prop.get("type")
    if isinstance(kind, list):
        return prop if "null" in kind else {**prop, "type": [*kind, "null"]}
    if kind is not None:
        return prop if kind == "null" else {**prop, "type": [kind, "null"]}
    if "anyOf" in prop:
        has_null = any(option.get("type") == "null" for option in prop["anyOf"])
        return prop if has_null else {**prop, "anyOf": [*prop["anyOf"], {"type": "null"}]}
    if "$ref" in prop:
        rest = {k: v for k, v in prop.items() if k != "$ref"}
        return {**rest, "anyOf": [{"$ref": prop["$ref"]}, {"type": "null"}]}
    return prop


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's schema as Letta sends it when the agent's model settings say ``strict``: ``"strict": true``, the
    parameters closed (``additionalProperties: false``), every property required and the optional ones nullable."""
    parameters = dict(schema.get("parameters") or {})
    if parameters.get("type") == "object":
        required = set(parameters.get("required") or [])
        properties = {
            name: strict_property(prop) if name in required else nullable(strict_property(prop))
            for name, prop in (parameters.get("properties") or {}).items()
        }
        parameters.update(additionalProperties=False, properties=properties, required=list(properties))
    return {**schema, "strict": True, "parameters": parameters}
