"""The generations log read back for a resumed run: one row per (example, model, sample), corrupt lines dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from void_pipeline.lib.curate.request import direct_profile
from void_pipeline.lib.evaluate.evaluation import smoke_case
from void_pipeline.lib.evaluate.generations import GENERATION_SCHEMA, Prompt, generate
from void_pipeline.lib.layout import EvaluationPaths
from void_pipeline.lib.serve.client import Sampling

UNREACHABLE = "http://127.0.0.1:9/v1"  # nothing listens: a test that asked the server would get errors


def row(example_id: str, model: str, text: str, error: str | None = None) -> dict[str, object]:
    return {
        "example_id": example_id, "model": model, "sample": 0, "posts": [text], "invalid_calls": 0, "content": "",
        "steps": 1, "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 5, "latency_s": 0.1,
        "seed": 1, "raw": "[]", "error": error,
    }  # fmt: skip


def test_a_resumed_log_keeps_one_row_per_answer_and_drops_corrupt_lines(tmp_path: Path) -> None:
    paths = EvaluationPaths(tmp_path / "eval")
    paths.root.mkdir(parents=True)
    lines = [
        row("e1", "base", "first"),
        row("e1", "base", "the same answer written twice (a kill between write and bookkeeping)"),
        row("e1", "tuned", "tuned"),
        {**row("e2", "base", "no example id"), "example_id": None},
        {k: v for k, v in row("e2", "base", "no key at all").items() if k != "example_id"},
        row("e2", "tuned", "", error="HTTP 500"),
        row("e2", "tuned", "answered on the next try"),
    ]
    text = "\n".join(json.dumps(line) for line in lines) + '\n{"example_id": "e3", "mod'  # a torn last line
    paths.generations_log.write_text(text)
    prompts = [Prompt("e1", "p1"), Prompt("e2", "p2")]
    run = generate(
        paths, UNREACHABLE, "", ["base", "tuned"], direct_profile("sys"), prompts, Sampling(), log=lambda m: None
    )
    keys = [(r["example_id"], r["model"]) for r in run.rows.iter_rows(named=True)]
    assert sorted(keys) == [("e1", "base"), ("e1", "tuned"), ("e2", "base"), ("e2", "tuned")]
    assert run.reused == 3 and run.generated == 1  # e2/base was asked again (and failed: nothing listens)
    by_key = {(r["example_id"], r["model"]): r for r in run.rows.iter_rows(named=True)}
    assert by_key[("e1", "base")]["posts"] == ["first"]
    assert by_key[("e2", "tuned")]["posts"] == ["answered on the next try"]
    assert by_key[("e2", "base")]["error"]
    logged = [json.loads(line) for line in paths.generations_log.read_text().splitlines()]
    assert len(logged) == 4  # the rewritten log: the kept rows and the new one, no duplicate, no corrupt line


def test_the_smoke_case_is_a_thread_the_adapter_answered_validly_with_the_evaluation_s_sampling(tmp_path: Path) -> None:
    paths = EvaluationPaths(tmp_path / "eval")
    paths.root.mkdir(parents=True)
    rows = [
        row("e1", "tuned", ":"),  # punctuation alone: not a valid reply
        row("e2", "base", "base answered this one"),
        row("e3", "tuned", "a real reply"),
        row("e4", "tuned", "also valid, but later"),
    ]
    pl.DataFrame(rows, schema=GENERATION_SCHEMA).write_parquet(paths.generations)
    paths.settings.write_text(json.dumps({"sampling": {"temperature": 0.3, "seed": 9, "samples": 2}}))
    times = [datetime(2026, 1, day, 12, tzinfo=UTC) for day in (1, 2, 3, 4)]
    heldout = pl.DataFrame(
        {"example_id": ["e1", "e2", "e3", "e4"], "prompt": ["p1", "p2", "p3", "p4"], "created_at": times}
    )
    case = smoke_case(paths, heldout)
    assert case is not None and (case.example_id, case.prompt, case.evaluated_posts) == ("e3", "p3", ["a real reply"])
    assert case.when == times[2]  # asked at the example's time, as evaluation asked it (Letta's system message)
    assert case.sampling == Sampling(temperature=0.3, seed=9, samples=1)
    assert smoke_case(paths, heldout.filter(pl.col("example_id") == "e1")) is None  # no valid answer to re-ask
