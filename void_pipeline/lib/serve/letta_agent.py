"""The switch: a self-hosted Letta server's agent pointed at the served model, over Letta's V1 REST API (0.16.8).

The agent gets its model settings directly (``llm_config``: the served name, the endpoint's ``/v1`` URL as the Letta
server reaches it, the context window): Letta's own ``vllm/<name>`` handles (from ``VLLM_API_BASE``) vanish as soon
as vLLM serves a LoRA adapter — vLLM lists adapters without ``max_model_len`` and Letta 0.16.8 then drops the whole
list. The switch checks that the agent has the reply tool and that the endpoint serves the model, sets the model
(and, by default, ``message_buffer_autoclear``: each mention then reaches the model as the training rows show it —
the system message and the mention, no earlier conversation), has Letta recompile the system message, and reads
the agent back. Importing an agent file (``POST /v1/agents/import``) makes a new agent from an ``.af``, then
switches it: an exported file's system message is the one compiled when it was exported.

Letta sends the endpoint its own ``OPENAI_API_KEY`` (the served endpoint's key belongs in the Letta server's
environment). The Letta server's password, when it runs with one, comes from ``$LETTA_API_KEY`` (a bearer token);
no secret appears in argv, logs or output.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from void_pipeline.lib.curate.agent_file import load_agent_file
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL_NAME

TOKEN_ENV = "LETTA_API_KEY"


class LettaError(RuntimeError):
    """Letta refused or could not be reached; the message says which and what to do."""


@dataclass(frozen=True)
class LettaApi:
    """Letta's V1 REST API on a server at ``url``."""

    url: str  # http://host:port (no /v1)
    timeout_s: float = 60.0

    def headers(self) -> dict[str, str]:
        token = os.environ.get(TOKEN_ENV)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.url.rstrip('/')}/v1{path}"
        try:
            response = httpx.request(method, url, headers=self.headers(), timeout=self.timeout_s, **kwargs)
        except httpx.ConnectError as err:
            raise LettaError(f"cannot connect to Letta at {self.url} ({err}): is the server up?") from err
        except httpx.TimeoutException as err:
            raise LettaError(
                f"Letta at {self.url} did not answer {method} {path} within {self.timeout_s:.0f} s"
            ) from err
        if response.status_code == 401:
            raise LettaError(f"Letta at {self.url} refused the request (401): set ${TOKEN_ENV} to its password")
        if response.status_code == 404:
            raise LettaError(f"Letta at {self.url}: {method} {path} found nothing (404): {response.text[:200]}")
        if response.status_code >= 400:
            raise LettaError(
                f"Letta at {self.url} answered {method} {path} with {response.status_code}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    def model_handles(self) -> list[str]:
        return sorted(str(m.get("handle")) for m in self.call("GET", "/models/") or [] if m.get("handle"))

    def agent(self, agent_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/agents/{agent_id}"))


def served_context_window(endpoint: str, api_key: str, model: str, timeout_s: float = 30.0) -> int:
    """The context window of ``model`` at the OpenAI-compatible ``endpoint`` (…/v1): its ``max_model_len``, or its
    base's for a LoRA adapter (vLLM lists an adapter with its base as ``parent`` and no length)."""
    try:
        response = httpx.get(f"{endpoint}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s)
    except httpx.HTTPError as err:
        raise LettaError(f"cannot reach the served endpoint {endpoint} ({err}): is it up? (serve status)") from err
    if response.status_code != 200:
        raise LettaError(f"the served endpoint {endpoint} answered /models with {response.status_code}")
    listed = {str(m.get("id")): m for m in response.json().get("data", [])}
    if model not in listed:
        raise LettaError(f"{endpoint} serves no model {model} (it serves {', '.join(sorted(listed)) or 'none'})")
    entry = listed[model]
    length = entry.get("max_model_len") or (listed.get(str(entry.get("parent"))) or {}).get("max_model_len")
    if not length:
        raise LettaError(f"{endpoint} gives no max_model_len for {model}: pass --context-window")
    return int(length)


def endpoint_config(
    endpoint: str,
    model: str,
    context_window: int,
    max_tokens: int = 1024,
    temperature: float = 0.7,
    strict: bool | None = None,
) -> dict[str, Any]:
    """The agent's model settings for ``model`` at the OpenAI-compatible ``endpoint`` (…/v1), the way Letta's own
    vLLM provider describes a vLLM model (an OpenAI-type endpoint), without needing Letta to list it. ``strict``:
    strict tool schemas (None: the agent's own setting stays)."""
    return {
        **({} if strict is None else {"strict": strict}),
        "model": model,
        "model_endpoint_type": "openai",
        "model_endpoint": endpoint.rstrip("/"),
        "context_window": context_window,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "handle": f"vllm/{model}",
        "put_inner_thoughts_in_kwargs": False,
        "parallel_tool_calls": False,
    }


def tool_names(agent: dict[str, Any]) -> list[str]:
    return [str(t.get("name")) for t in agent.get("tools") or []]


@dataclass(frozen=True)
class Switched:
    agent_id: str
    name: str
    before: str | None
    after: str | None
    endpoint: str | None
    autoclear: bool
    context_window: int | None


def switch(server: LettaApi, agent_id: str, llm_config: dict[str, Any], autoclear: bool = True) -> Switched:
    """Point the agent at the model ``llm_config`` names; LettaError (nothing changed) when the agent cannot post."""
    agent = server.agent(agent_id)
    if REPLY_TOOL_NAME not in tool_names(agent):
        have = ", ".join(tool_names(agent)) or "none"
        raise LettaError(f"agent {agent_id} has no {REPLY_TOOL_NAME} tool, so it cannot post (its tools: {have})")
    current = agent.get("llm_config") or {}
    before = current.get("model")
    # strict tool schemas change what the model is shown: the agent's own setting stays unless one is given
    body: dict[str, Any] = {"llm_config": {"strict": bool(current.get("strict")), **llm_config}}
    if autoclear:
        body["message_buffer_autoclear"] = True
    server.call("PATCH", f"/agents/{agent_id}", json=body)
    server.call("POST", f"/agents/{agent_id}/recompile")  # the system message as the agent's memory is now
    after = server.agent(agent_id)
    config = after.get("llm_config") or {}
    return Switched(
        agent_id,
        str(after.get("name")),
        before,
        config.get("model"),
        config.get("model_endpoint"),
        bool(after.get("message_buffer_autoclear")),
        config.get("context_window"),
    )


def import_agent_file(server: LettaApi, path: Path, llm_config: dict[str, Any], name: str | None = None) -> str:
    """A new agent from an agent file, switched to the model ``llm_config`` names; its id. The file is checked first
    (lib/curate/agent_file.py: AgentFileError naming the field; an agent that cannot post is refused): nothing is
    created from a file that cannot serve."""
    load_agent_file(path)
    data = json.loads(path.read_text())
    own = data["agents"][0].get("llm_config") or {}
    # Letta refuses an import without model settings; the file's own name the old model (its strict setting stays)
    data["agents"][0]["llm_config"] = {"strict": bool(own.get("strict")), **llm_config}
    form = {"name": name} if name else {"append_copy_suffix": "false"}
    upload = json.dumps(data, ensure_ascii=False).encode()
    created = server.call("POST", "/agents/import", files={"file": (path.name, upload, "application/json")}, data=form)
    ids = (created or {}).get("agent_ids") or []
    if len(ids) != 1:
        raise LettaError(f"Letta at {server.url} imported {path} as {json.dumps(ids)}: expected one agent")
    switch(server, str(ids[0]), llm_config)
    return str(ids[0])
