"""Held-out generations: each test prompt answered by each model through a running OpenAI-compatible server, the
way the handler's agent loop asks — the system prompt and the tools the training used, then one request per post:
the model calls the reply tool, gets the tool's result (the same text the training rows hold), and is asked again
until it answers without a call (or reaches ``max_posts``).

One row per (example, model, sample), appended to a JSON-lines file as soon as it is done (flushed and synced), so a
killed run keeps every finished row and the next run answers only what is missing. The file lives in a folder
named by the settings' fingerprint: a run with other settings never mixes its rows with these.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from void_pipeline.lib.curate.prompt import REPLY_TOOL_NAME, reply_call_errors, reply_tool_result
from void_pipeline.lib.files import write_bytes_atomic, write_parquet_atomic
from void_pipeline.lib.layout import EvaluationPaths

GENERATION_SCHEMA: dict[str, pl.DataType] = {
    "example_id": pl.String(),
    "model": pl.String(),
    "sample": pl.Int64(),
    "posts": pl.List(pl.String()),  # the texts of the valid reply calls, in order
    "invalid_calls": pl.Int64(),  # calls that did not parse, named another tool or had bad arguments
    "content": pl.String(),  # what the model wrote besides its calls, all turns
    "steps": pl.Int64(),  # requests made for this answer
    "finish_reason": pl.String(),  # of the last request; "max_posts" when the loop stopped it
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "latency_s": pl.Float64(),
    "seed": pl.Int64(),
    "raw": pl.String(),  # each request's assistant message, as JSON
    "error": pl.String(),  # the server's error, when the answer could not be had
}


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 200  # per request (one post)
    seed: int = 0
    samples: int = 1  # answers per prompt and model
    max_posts: int = 6  # reply calls in one answer before the loop stops it


@dataclass(frozen=True)
class Prompt:
    example_id: str
    prompt: str


def fingerprint(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def request_seed(sampling: Sampling, example_id: str, sample: int, step: int) -> int:
    """The same seed for every model on the same (example, sample, step): differences come from the models."""
    digest = hashlib.sha256(f"{sampling.seed}:{example_id}:{sample}:{step}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def answer(
    client: httpx.Client,
    base_url: str,
    headers: Mapping[str, str],
    model: str,
    system: str,
    tools: list[dict[str, Any]],
    prompt: Prompt,
    sampling: Sampling,
    sample: int,
) -> dict[str, Any]:
    """One answer through the agent loop (a GENERATION_SCHEMA row)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": prompt.prompt}]
    posts: list[str] = []
    content: list[str] = []
    raw: list[Any] = []
    invalid = prompt_tokens = completion_tokens = 0
    finish, error = "max_posts", None
    started = time.monotonic()
    step = 0
    while step <= sampling.max_posts:
        body = {
            "model": model,
            "messages": messages,
            "tools": tools,
            "tool_choice": "auto",
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": request_seed(sampling, prompt.example_id, sample, step),
        }
        step += 1
        try:
            response = client.post(f"{base_url}/chat/completions", headers=dict(headers), json=body)
        except httpx.HTTPError as err:
            finish, error = "error", f"{type(err).__name__}: {err}"
            break
        if response.status_code != 200:
            finish, error = "error", f"HTTP {response.status_code}: {response.text[:500]}"
            break
        data = response.json()
        usage = data.get("usage") or {}
        prompt_tokens += int(usage.get("prompt_tokens") or 0)
        completion_tokens += int(usage.get("completion_tokens") or 0)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        raw.append(message)
        if message.get("content"):
            content.append(str(message["content"]))
        calls = message.get("tool_calls") or []
        finish = str(choice.get("finish_reason"))
        if not calls:
            break
        replies, results = [], []
        for call in calls:
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "null")
            except json.JSONDecodeError:
                arguments = None
            if function.get("name") != REPLY_TOOL_NAME or reply_call_errors(arguments):
                invalid += 1
                continue
            text = str(arguments["text"])
            results.append(
                {"role": "tool", "tool_call_id": call.get("id", ""), "content": reply_tool_result(len(posts), text)}
            )
            posts.append(text)
            replies.append(call)
        if invalid or len(posts) >= sampling.max_posts:
            finish = "invalid_call" if invalid else "max_posts"
            break
        messages.append({"role": "assistant", "content": message.get("content") or "", "tool_calls": replies})
        messages += results
    return {
        "example_id": prompt.example_id,
        "model": model,
        "sample": sample,
        "posts": posts,
        "invalid_calls": invalid,
        "content": "\n".join(content),
        "steps": step,
        "finish_reason": finish,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_s": round(time.monotonic() - started, 4),
        "seed": request_seed(sampling, prompt.example_id, sample, 0),
        "raw": json.dumps(raw, ensure_ascii=False),
        "error": error,
    }


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Finished rows of a generations file; a torn last line (a kill mid-write) is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@dataclass
class GenerationRun:
    rows: pl.DataFrame
    reused: int  # rows a previous (killed) run had already written
    generated: int
    seconds: float


def generate(
    paths: EvaluationPaths,
    base_url: str,
    headers: Mapping[str, str],
    models: Sequence[str],
    system: str,
    tools: list[dict[str, Any]],
    prompts: Sequence[Prompt],
    sampling: Sampling,
    concurrency: int = 4,
    log: Callable[[str], None] = print,
    timeout_s: float = 600.0,
) -> GenerationRun:
    """Answer every (prompt, model, sample) not yet in the generations log; write the whole table (atomically) at
    the end. An answer the server could not give is a row with ``error`` set, asked again by the next run."""
    paths.root.mkdir(parents=True, exist_ok=True)
    jsonl = paths.generations_log
    done_rows = [r for r in read_rows(jsonl) if r.get("error") is None]
    done = {(r["example_id"], r["model"], r["sample"]) for r in done_rows}
    todo = [
        (prompt, model, sample)
        for prompt in prompts
        for model in models
        for sample in range(sampling.samples)
        if (prompt.example_id, model, sample) not in done
    ]
    log(f"[evaluate] {len(done):,} answers kept from an earlier run, {len(todo):,} to generate")
    started = time.monotonic()
    new_rows: list[dict[str, Any]] = []
    _rewrite(jsonl, done_rows)  # drops rows with errors and a torn last line: they are asked again
    with open(jsonl, "ab") as out, httpx.Client(timeout=timeout_s) as client:

        def one(item: tuple[Prompt, str, int]) -> dict[str, Any]:
            prompt, model, sample = item
            return answer(client, base_url, headers, model, system, tools, prompt, sampling, sample)

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(one, item) for item in todo]
            for count, future in enumerate(as_completed(futures), 1):
                row = future.result()
                out.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")  # one writer: this thread
                out.flush()
                os.fsync(out.fileno())
                new_rows.append(row)
                if count % 10 == 0 or count == len(todo):
                    log(f"[evaluate] {count:,}/{len(todo):,} answers ({time.monotonic() - started:.0f} s)")
    rows = pl.DataFrame([*done_rows, *new_rows], schema=GENERATION_SCHEMA).sort("example_id", "model", "sample")
    write_parquet_atomic(rows, paths.generations)
    return GenerationRun(rows, len(done_rows), len(new_rows), time.monotonic() - started)


def _rewrite(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_bytes_atomic(path, b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows))


def settings_record(sampling: Sampling, **more: Any) -> dict[str, Any]:
    return {"sampling": asdict(sampling), **more}
