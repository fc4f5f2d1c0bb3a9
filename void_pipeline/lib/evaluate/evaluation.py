"""What an evaluation asks and of whom: the held-out prompts, the server that answers them (the base model and the
trained adapter, as the training left them), the authorship classifier's training posts (the review pack: review.py).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
import yaml

from void_pipeline.lib.curate.dataset import calls_of, format_row
from void_pipeline.lib.curate.request import dataset_profile
from void_pipeline.lib.evaluate.generations import Prompt
from void_pipeline.lib.evaluate.metrics import valid_answer
from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.handoffs import TrainingOutcome
from void_pipeline.lib.layout import DatasetPaths, EvaluationPaths
from void_pipeline.lib.model import family_of
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.serve.vllm_server import TOOL_CALL_PARSERS, ServerSpec


class CannotEvaluate(ValueError):
    """Something evaluation needs is missing; the message says what to materialize."""


def heldout(dataset: Path) -> pl.DataFrame:
    path = DatasetPaths(dataset).heldout
    if not path.exists():
        raise CannotEvaluate(f"{path} is missing: materialize chat_dataset again (it writes the held-out split)")
    frame = pl.read_parquet(path)
    if frame.height == 0:
        raise CannotEvaluate(f"the dataset {dataset} has no held-out (test) examples")
    return frame


def choose_prompts(heldout: pl.DataFrame, limit: int, seed: int) -> list[Prompt]:
    """``limit`` held-out examples, a seeded random choice (all of them when there are fewer)."""
    rows = list(zip(heldout["example_id"].to_list(), heldout["prompt"].to_list(), strict=True))
    if limit < len(rows):
        rows = sorted(random.Random(seed).sample(rows, limit))
    times = dict(zip(heldout["example_id"].to_list(), heldout["created_at"].to_list(), strict=True))
    return [Prompt(example_id, prompt, times[example_id]) for example_id, prompt in rows]


def real_answers(heldout: pl.DataFrame) -> dict[str, list[str]]:
    return dict(zip(heldout["example_id"].to_list(), heldout["calls"].to_list(), strict=True))


def server_spec(
    training: TrainingOutcome,
    dtype: str,
    env: Mapping[str, str],
    max_model_len: int | None = None,
    extra_args: Sequence[str] = (),
) -> ServerSpec:
    """The base model under ``base`` and the trained adapter under ``tuned``, with the chat template the adapter
    was trained with (axolotl saves it beside the adapter) and the family's tool-call parser."""
    adapter = training.adapter
    if not (adapter / "adapter_config.json").exists():
        raise CannotEvaluate(f"the latest adapter {adapter} is gone or incomplete: materialize lora_adapter again")
    config = yaml.safe_load(training.config.read_text())
    base = training.base_model
    family = family_of(str(config.get("base_model", base)), base)
    parser = TOOL_CALL_PARSERS.get(family)
    if parser is None:
        raise CannotEvaluate(f"no vLLM tool-call parser is known for the {family} family ({base})")
    template = adapter / "chat_template.jinja"
    return ServerSpec(
        model=base,
        adapters={"tuned": str(adapter)},
        lora_rank=int(config.get("lora_r") or 16),
        tool_call_parser=parser,
        chat_template=str(template) if template.exists() else None,
        dtype=dtype,
        max_model_len=max_model_len,
        extra_args=tuple(extra_args),
        env=dict(env),
    )


def authorship_corpus(dataset: Path, thread_context: pl.DataFrame, agent_did: str) -> tuple[list[str], list[str]]:
    """The agent's replies in the train split, and the other authors' posts in those same threads (the ancestors
    thread context holds for the train split's replies): what the authorship classifier learns from."""
    files = DatasetPaths(dataset)
    agent = []
    for line in files.split("train").read_bytes().splitlines():
        agent += [str(c["arguments"]["text"]) for c in calls_of(json.loads(line), files.format)]
    index = pl.read_parquet(files.index)
    train_ids = index.filter(pl.col("split") == "train")["example_id"].implode()
    ancestors = (
        thread_context.filter(pl.col("uri").is_in(train_ids))
        .select(pl.col("ancestors").explode())
        .unnest("ancestors")
        .filter(pl.col("available") & (pl.col("author_did") != agent_did) & pl.col("text").is_not_null())
        .unique("uri")
    )
    return agent, ancestors["text"].to_list()


def model_measure_inputs(paths: EvaluationPaths, heldout: pl.DataFrame, generations: pl.DataFrame) -> tuple[Path, Path]:
    """The files the trainer-side measures read: the evaluated held-out examples as training rows (system prompt
    and tools included), and each generated answer beside its real reply (answers with no post are left out: the
    failure modes count them)."""
    settings = json.loads(paths.settings.read_text())
    dataset = DatasetPaths(Path(settings["dataset"]))
    request = dataset_profile(dataset.request, dataset.system_prompt, dataset.tools)
    system = request.system if request.runtime == "direct" else None  # letta rows carry their own
    evaluated = set(generations["example_id"].to_list())
    rows = []
    for example_id, prompt, calls, when in heldout.select("example_id", "prompt", "calls", "created_at").iter_rows():
        if example_id in evaluated:
            example = {"prompt": prompt, "calls": calls, "reasoning": None, "created_at": when}
            row = format_row(example, "openai", system, request)
            rows.append(json.dumps({"example_id": example_id, "messages": row["messages"], "tools": row["tools"]}))
    real = real_answers(heldout)
    answers = [
        json.dumps({"model": model, "text": "\n\n".join(posts), "real": "\n\n".join(real.get(example_id, []))})
        for example_id, model, posts in generations.select("example_id", "model", "posts").iter_rows()
        if posts and real.get(example_id)
    ]
    rows_path, answers_path = paths.root / "heldout_rows.jsonl", paths.root / "answers.jsonl"
    write_text_atomic(rows_path, "\n".join(rows) + "\n")
    write_text_atomic(answers_path, "\n".join(answers) + ("\n" if answers else ""))
    return rows_path, answers_path


def judge_inputs(
    heldout: pl.DataFrame, generations: pl.DataFrame, threads: int
) -> tuple[dict[str, str], dict[str, dict[str, list[str]]]]:
    """The first ``threads`` evaluated examples' prompts, and every model's first answer to them beside the real
    reply (``real``): what the optional judge compares."""
    first = generations.filter(pl.col("sample") == 0)
    ids = sorted(set(first["example_id"].to_list()))[:threads]
    prompts = dict(zip(heldout["example_id"].to_list(), heldout["prompt"].to_list(), strict=True))
    answers: dict[str, dict[str, list[str]]] = {"real": {e: posts for e, posts in real_answers(heldout).items()}}
    for example_id, model, posts in first.select("example_id", "model", "posts").iter_rows():
        answers.setdefault(model, {})[example_id] = posts
    return {e: prompts[e] for e in ids if e in prompts}, answers


@dataclass(frozen=True)
class SmokeCase:
    """A held-out thread the evaluated adapter answered validly, and how it was asked: served with the same
    sampling and seed, the bundle must answer it validly again (and, on the same engine, with the same posts)."""

    example_id: str
    prompt: str
    sampling: Sampling
    evaluated_posts: list[str]
    when: datetime | None = None  # the example's time, as evaluation asked it (letta: the system message's time)


def smoke_case(paths: EvaluationPaths, heldout: pl.DataFrame, model: str = "tuned") -> SmokeCase | None:
    """The first (by example id) of ``model``'s evaluated answers that is a valid reply by evaluation's rule (at least
    one call, every call the reply tool, every post postable); None when it gave none."""
    rows = pl.read_parquet(paths.generations).filter((pl.col("model") == model) & (pl.col("sample") == 0))
    prompts = dict(zip(heldout["example_id"].to_list(), heldout["prompt"].to_list(), strict=True))
    times = dict(zip(heldout["example_id"].to_list(), heldout["created_at"].to_list(), strict=True))
    settings = json.loads(paths.settings.read_text())
    sampling = Sampling(**{**settings["sampling"], "samples": 1})
    for row in rows.sort("example_id").iter_rows(named=True):
        posts = list(row["posts"] or [])
        if not row["error"] and valid_answer(posts, row["invalid_calls"]) and row["example_id"] in prompts:
            return SmokeCase(row["example_id"], prompts[row["example_id"]], sampling, posts, times[row["example_id"]])
    return None
