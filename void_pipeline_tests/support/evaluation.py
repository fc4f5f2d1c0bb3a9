"""Evaluation inputs written by hand: generation rows as eval_generations stores them."""

from __future__ import annotations

import polars as pl

from void_pipeline.lib.evaluate.generations import GENERATION_SCHEMA


def generations(answers: dict[str, dict[str, list[str]]], invalid: dict[str, int] | None = None) -> pl.DataFrame:
    """One first sample per model and example: its posts, and ``invalid[model]`` invalid calls in each answer."""
    rows = []
    for model, by_example in answers.items():
        for example_id, posts in by_example.items():
            rows.append(
                {"example_id": example_id, "model": model, "sample": 0, "posts": posts,
                 "invalid_calls": (invalid or {}).get(model, 0), "content": "", "steps": len(posts) + 1,
                 "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 10, "latency_s": 0.1, "seed": 1,
                 "raw": "[]", "error": None}
            )  # fmt: skip
    return pl.DataFrame(rows, schema=GENERATION_SCHEMA)
