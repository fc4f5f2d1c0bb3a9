"""Request profiles from context windows: the system renderer each runtime compiles its system message with (token
budgets and trimming count the message as the runtime sends it), and the profile a window hands to chat_dataset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from void_pipeline.lib.curate.agent_file import DEFAULT_BLOCK_LIMIT
from void_pipeline.lib.curate.context import DIRECT, Block, ContextWindow, Snapshot, SystemRenderer, context_windows
from void_pipeline.lib.curate.letta import STAND_IN_AGENT_ID, MemoryBlock, compile_system, memory_blocks
from void_pipeline.lib.curate.prompt import TOOL_DESCRIPTION
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL
from void_pipeline.lib.curate.request import (
    DEFAULT_REPLY_RESULT,
    MEMGPT_TYPES,
    RequestProfile,
    Runtime,
    direct_profile,
)
from void_pipeline.lib.files import staged_dir, write_text_atomic
from void_pipeline.lib.handoffs import ContextWindowReport
from void_pipeline.lib.layout import ContextWindowPaths
from void_pipeline.lib.model import TokenCounter


class LettaSystem:
    """context's SystemRenderer for Letta: the compiled system message at a fixed time (token budgets count the
    message as Letta sends it; the time's length does not change with its value)."""

    name = "letta"

    def __init__(self, when: datetime, agent_id: str = STAND_IN_AGENT_ID, timezone: str | None = None) -> None:
        self.when, self.agent_id, self.timezone = when, agent_id, timezone

    def system(self, snapshot: Snapshot, kept: Mapping[str, str]) -> str:
        rules = snapshot.agent.tool_rules if snapshot.agent else ()
        return compile_system(
            snapshot.system_prompt, memory(snapshot, kept), rules, self.agent_id, self.when, self.timezone
        )

    def section(self, block: Block, text: str) -> str:
        return memory_blocks([memory_block(block, text)])


def memory_block(block: Block, text: str) -> MemoryBlock:
    return MemoryBlock(block.label, text, block.limit or DEFAULT_BLOCK_LIMIT, block.description, block.read_only)


def memory(snapshot: Snapshot, kept: Mapping[str, str]) -> list[MemoryBlock]:
    """The blocks a window shows, in the agent's order, as Letta lists them."""
    return [memory_block(b, kept[b.label]) for b in snapshot.blocks if b.label in kept]


# memgpt agent types: Letta adds these two arguments to every tool at request time; descriptions of our own unless
# the agent file's schema carries Letta's (the profile's notes say so).
THINKING = {"type": "string", "description": "Your private reasoning before this call."}
HEARTBEAT = {"type": "boolean", "description": "true to continue after this call; false ends the turn."}


def memgpt_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's schema as Letta sends it to a memgpt agent: ``thinking`` first, ``request_heartbeat`` last, both
    required."""
    parameters = dict(schema.get("parameters") or {})
    properties = {
        k: v for k, v in (parameters.get("properties") or {}).items() if k not in ("thinking", "request_heartbeat")
    }
    stored = parameters.get("properties") or {}
    properties = {
        "thinking": stored.get("thinking", THINKING),
        **properties,
        "request_heartbeat": stored.get("request_heartbeat", HEARTBEAT),
    }
    required = [r for r in parameters.get("required") or [] if r not in ("thinking", "request_heartbeat")]
    parameters.update(properties=properties, required=["thinking", *required, "request_heartbeat"])
    return {**schema, "parameters": parameters}


def letta_tools(snapshot: Snapshot) -> tuple[dict[str, Any], ...]:
    """The agent's tools as Letta offers them; a snapshot folder (no agent file) offers the reply tool alone."""
    if snapshot.agent is None:
        return (REPLY_TOOL,)
    memgpt = snapshot.agent.agent_type in MEMGPT_TYPES
    return tuple(
        {"type": "function", "function": memgpt_schema(tool.json_schema) if memgpt else dict(tool.json_schema)}
        for tool in snapshot.agent.tools
    )


def renderer_for(runtime: Runtime, snapshot: Snapshot) -> SystemRenderer:
    if runtime == "direct":
        return DIRECT
    moment = datetime.combine(snapshot.snapshot_date, datetime.min.time(), UTC)
    return LettaSystem(moment, timezone=snapshot.agent.timezone if snapshot.agent else None)


def window_profile(
    runtime: Runtime, snapshot: Snapshot, window: ContextWindow, reply_result: str = DEFAULT_REPLY_RESULT
) -> RequestProfile:
    """The request profile of one context window under ``runtime``."""
    if runtime == "direct":
        return direct_profile(window.text)
    agent = snapshot.agent
    notes = [] if agent else ["no agent file: letta_v1_agent with the reply tool alone is assumed"]
    if agent and agent.agent_type in MEMGPT_TYPES:
        notes.append(
            "memgpt agent type: the thinking and request_heartbeat arguments' descriptions are our own unless the "
            "agent file carries Letta's; the boot messages Letta puts before the first mention are not rendered"
        )
    return RequestProfile(
        "letta",
        snapshot.system_prompt,
        letta_tools(snapshot),
        tuple(memory(snapshot, window.kept)),
        agent.tool_rules if agent else (),
        agent.agent_type if agent else "letta_v1_agent",
        STAND_IN_AGENT_ID,
        agent.timezone if agent else None,
        reply_result,
        tuple(notes),
        strict=bool(agent.llm_config.get("strict")) if agent else False,
    )


@dataclass(frozen=True)
class BuiltContext:
    """Every system prompt variant of a context source, its request profile, and the report chat_dataset reads."""

    windows: dict[str, ContextWindow]
    profiles: dict[str, RequestProfile]
    report: ContextWindowReport

    def write(self, folder: Path) -> None:
        """The variants, their request profiles and the report, replacing ``folder`` together (DiskFull names it)."""
        with staged_dir(folder) as staging:
            files = ContextWindowPaths(staging)
            for name, window in self.windows.items():
                write_text_atomic(files.variant(name), window.text)
                self.profiles[name].write(files.request(name))
            self.report.write(files.report)


def build_context(
    snapshot: Snapshot,
    runtime: Runtime,
    strategy: str,
    source: str,
    counter: TokenCounter,
    budget_tokens: int,
    reply_result: str = DEFAULT_REPLY_RESULT,
) -> BuiltContext:
    """The full, trimmed (to ``budget_tokens``) and distilled variants as ``runtime`` renders them; SnapshotError
    when the trimmed one cannot fit, ProfileError when the runtime cannot ask with this source."""
    windows = context_windows(snapshot, counter, budget_tokens, TOOL_DESCRIPTION, renderer_for(runtime, snapshot))
    profiles = {name: window_profile(runtime, snapshot, w, reply_result) for name, w in windows.items()}
    report = ContextWindowReport(
        selected=strategy,
        tokens={name: w.tokens for name, w in windows.items()},
        runtime=runtime,
        source=source,
        agent_type=snapshot.agent.agent_type if snapshot.agent else None,
        prompt_template=str(snapshot.prompt_template) if snapshot.prompt_template else None,
        snapshot_date=snapshot.snapshot_date.isoformat(),
        budget_tokens=budget_tokens,
        exact_tokens=counter.exact,
        tokenizer=counter.source,
    )
    return BuiltContext(windows, profiles, report)
