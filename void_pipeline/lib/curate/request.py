"""The request the model is asked with, by runtime: the one typed hand-off from context_window to every renderer.

``RequestProfile`` says what a request holds besides the mention prompt — the system message, the tools, each reply
call's arguments and result, how the loop ends — for one of two runtimes:

- ``direct``: our own conversation, for operators who call the endpoint without Letta: a fixed system message, the
  reply tool alone, ``Posted reply N (C characters).`` as its result, and a closing turn without a call;
- ``letta``: what the Letta server sends for the agent (lib/curate/letta.py): its system message compiled at the
  request's time, the agent's tools with their schemas as Letta sends them, each result as Letta packs it
  (``{"status": "OK", "message": ..., "time": ...}``), and for ``letta_v1_agent`` a closing turn without a call; for
  ``memgpt_agent``/``memgpt_v2_agent`` the reply calls carry ``thinking`` and ``request_heartbeat`` (the last call's
  ``false`` ends the turn; there is no closing turn).

context_window writes one per strategy (``request-<strategy>.json``); chat_dataset copies the chosen one into the
dataset (``request.json``), the serving bundle copies it from there. A dataset without one is ``direct`` with its
``system_prompt.txt`` and ``tools.json`` (datasets made before profiles existed). Standard library only (the reference
client imports it); lib/curate/runtime.py makes profiles from context windows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from void_pipeline.lib.curate.letta import STAND_IN_AGENT_ID, MemoryBlock, compile_system, letta_time, strict_schema
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL, REPLY_TOOL_NAME, reply_tool_result
from void_pipeline.lib.files import write_text_atomic

# The handler whose thread layout the user message shows (lib/curate/handler.py names the profiles).
DEFAULT_HANDLER = "example-social-agent@e7a2a05"
Runtime = Literal["direct", "letta"]
RUNTIMES: tuple[Runtime, ...] = ("direct", "letta")
MEMGPT_TYPES = ("memgpt_agent", "memgpt_v2_agent")
# What the demo agent's reply tool returns (void_pipeline/agents/void-demo.af holds a tool that returns the same);
# an operator whose tool returns another text says so in context_window's config (reply_result).
DEFAULT_REPLY_RESULT = "Post queued for the reply thread ({chars} characters)."
REPLY_RESULT_FIELDS = ("number", "chars", "text")


class ProfileError(ValueError):
    """A request profile that cannot be used; the message names the file or the setting."""


@dataclass(frozen=True)
class RequestProfile:
    runtime: Runtime
    system: str  # direct: the system message; letta: the agent's system text (compiled per request)
    tools: tuple[dict[str, Any], ...]  # as the runtime sends them (OpenAI's function tools)
    blocks: tuple[MemoryBlock, ...] = ()  # letta: the blocks as this strategy keeps them
    tool_rules: tuple[dict[str, Any], ...] = ()
    agent_type: str = "letta_v1_agent"
    agent_id: str = STAND_IN_AGENT_ID
    timezone: str | None = None
    reply_result: str = DEFAULT_REPLY_RESULT  # letta: the reply tool's return value
    notes: tuple[str, ...] = field(default=())
    handler: str = DEFAULT_HANDLER  # how the user message shows the thread (chat_dataset sets it)
    strict: bool = False  # letta: the agent's model settings ask for strict tool schemas

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ProfileError(f"runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if REPLY_TOOL_NAME not in self.tool_names():
            raise ProfileError(f"the tools offered have no {REPLY_TOOL_NAME}: {', '.join(self.tool_names())}")
        try:
            self.reply_result.format(number=1, chars=1, text="")
        except (KeyError, IndexError, ValueError) as err:
            raise ProfileError(
                f"reply_result {self.reply_result!r} names an unknown field ({err}): use {{number}}, {{chars}}, {{text}}"
            ) from err

    @property
    def memgpt(self) -> bool:
        return self.runtime == "letta" and self.agent_type in MEMGPT_TYPES

    def tool_names(self) -> list[str]:
        return [str(t.get("function", {}).get("name")) for t in self.tools]

    def reply_schema(self) -> dict[str, Any]:
        tool = next(t for t in self.tools if t.get("function", {}).get("name") == REPLY_TOOL_NAME)
        return dict(tool["function"].get("parameters") or {})

    def reply_argument_names(self) -> frozenset[str]:
        """The arguments a reply call may carry (the tool's declared properties)."""
        return frozenset(self.reply_schema().get("properties") or {"text": {}})

    def system_message(self, when: datetime | None = None, previous_messages: int = 0) -> str:
        """The system message of a request made at ``when`` (letta: the memory metadata's time)."""
        if self.runtime == "direct":
            return self.system
        return compile_system(
            self.system,
            self.blocks,
            self.tool_rules,
            self.agent_id,
            when or datetime.now(UTC),
            self.timezone,
            previous_messages,
        )

    def reply_arguments(self, text: str, last: bool, thinking: str = "") -> dict[str, Any]:
        """A reply call's arguments; memgpt types add ``thinking`` first and ``request_heartbeat`` (false ends)."""
        if not self.memgpt:
            return {"text": text}
        return {"thinking": thinking, "text": text, "request_heartbeat": not last}

    def tool_result(self, index: int, text: str, when: datetime | None = None) -> str:
        """The tool message's content after the ``index``-th reply call (0-based) posting ``text``."""
        if self.runtime == "direct":
            return reply_tool_result(index, text)
        message = self.reply_result.format(number=index + 1, chars=len(text), text=text)
        packed = {"status": "OK", "message": message, "time": letta_time(when or datetime.now(UTC), self.timezone)}
        return json.dumps(packed, indent=2, ensure_ascii=False)

    def closing_turn(self) -> bool:
        """Whether an answer ends with an assistant turn without a call (memgpt types end on the last call)."""
        return not self.memgpt

    def offered_tools(self) -> tuple[dict[str, Any], ...]:
        """The tools as the runtime sends them (strict schemas when the agent's model settings say so)."""
        if not (self.strict and self.runtime == "letta"):
            return self.tools
        return tuple({**t, "function": strict_schema(dict(t["function"]))} for t in self.tools)

    def step_tools(self, step: int) -> tuple[tuple[dict[str, Any], ...], Any]:
        """The tools offered at loop step ``step`` (0-based) and the tool choice: Letta's ``run_first`` rule offers
        only its tool at the first step, by name; every other step offers all tools, ``auto``."""
        first = [r.get("tool_name") for r in self.tool_rules if r.get("type") == "run_first"]
        if step == 0 and first and self.runtime == "letta":
            tools = tuple(t for t in self.offered_tools() if t.get("function", {}).get("name") in first)
            return tools, {"type": "function", "function": {"name": first[0]}}
        return self.offered_tools(), "auto"

    def request_options(self) -> dict[str, Any]:
        """What the runtime adds to every chat request besides messages, tools and sampling."""
        return {"parallel_tool_calls": False} if self.runtime == "letta" else {}

    # --- files -------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        data = asdict(self)
        data["blocks"] = [asdict(b) for b in self.blocks]
        return json.dumps(data, indent=2, ensure_ascii=False)

    def write(self, path: Path) -> None:
        write_text_atomic(path, self.to_json())

    @classmethod
    def from_json(cls, text: str, name: str = "request profile") -> RequestProfile:
        try:
            data = json.loads(text)
            blocks = tuple(MemoryBlock(**b) for b in data.pop("blocks", []))
            return cls(
                **{
                    **data,
                    "blocks": blocks,
                    "tools": tuple(data["tools"]),
                    "tool_rules": tuple(data.get("tool_rules", ())),
                    "notes": tuple(data.get("notes", ())),
                }
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ProfileError(f"{name} is not a request profile: {err}") from err

    @classmethod
    def read(cls, path: Path) -> RequestProfile:
        return cls.from_json(path.read_text(), str(path))


def direct_profile(system: str, tools: Sequence[dict[str, Any]] = (REPLY_TOOL,)) -> RequestProfile:
    return RequestProfile("direct", system, tuple(tools))


DIRECT_PROFILE = direct_profile("")  # the direct runtime with no system message inlined (rows store it once)


def dataset_profile(request: Path, system_prompt: Path, tools: Path) -> RequestProfile:
    """A dataset's or a bundle's profile: its ``request.json``, else ``direct`` from its system prompt and tools."""
    if request.exists():
        return RequestProfile.read(request)
    return direct_profile(system_prompt.read_text(), json.loads(tools.read_text()))
