"""A curate asset that fails never damages what it was replacing: the old output stays whole, the error says why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from void_pipeline.defs.curate import defs as curate_defs
from void_pipeline.defs.curate.assets import chat_dataset, context_window
from void_pipeline.lib.curate.dataset import dataset_problems
from void_pipeline.resources.model import ModelChoice
from void_pipeline_tests.support.runs import failure_text, snapshot
from void_pipeline_tests.support.world import model_choice

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


def rebuild(curated: dict[str, Any], asset: dg.AssetsDefinition, sequence_len: int) -> dg.ExecuteInProcessResult:
    model: ModelChoice = curated["resources"]["model"]
    resources = {**curated["resources"], "model": model_choice(local_path=model.local_path, sequence_len=sequence_len)}
    return dg.materialize(
        [*curated["assets"], *(curate_defs.asset_checks or [])],
        selection=[asset.key],
        resources=resources,
        run_config={"ops": {"chat_dataset": {"config": {"test_threads": 10}}}} if asset is chat_dataset else None,
        raise_on_error=False,
    )


def test_a_chat_dataset_longer_than_sequence_len_fails_and_keeps_the_previous_dataset(
    curated: dict[str, Any],
) -> None:
    folder: Path = curated["dataset"]
    before = snapshot(folder)
    result = rebuild(curated, chat_dataset, sequence_len=10)
    message = failure_text(result)
    assert "is longer than sequence_len 10: the shortest is" in message and "Raise VOID_SEQUENCE_LEN" in message
    assert "tool" not in message.split("Raise")[0]  # its own error, not a check's
    assert not [e for e in result.get_asset_check_evaluations()]  # the blocking checks never ran on an empty set
    assert snapshot(folder) == before and all(before[f"{s}.jsonl"] for s in ("train", "val", "test"))
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []


def test_a_sequence_len_below_the_context_reserve_names_reserve_tokens(curated: dict[str, Any]) -> None:
    folder = curated["dataset"].parents[1] / "context_window"
    before = snapshot(folder)
    message = failure_text(rebuild(curated, context_window, sequence_len=1000))
    assert "sequence_len 1000 minus context_window's reserve_tokens 2048" in message
    assert "raise VOID_SEQUENCE_LEN or lower reserve_tokens" in message
    assert snapshot(folder) == before


def test_an_invalid_staged_dataset_is_refused_before_it_replaces_anything(
    curated: dict[str, Any], tmp_path: Path
) -> None:
    import polars as pl

    source: Path = curated["dataset"]
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "request.json"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    index = pl.read_parquet(source / "index.parquet")
    assert dataset_problems(tmp_path, "openai", index) == []  # the real dataset passes
    row = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    row["messages"][2]["tool_calls"][0]["function"]["arguments"]["text"] = "x" * 400  # system, user, first call
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    refused = dataset_problems(tmp_path, "openai", index)
    assert len(refused) == 1 and "train.jsonl:1" in refused[0], refused
    leak = pl.concat([index, index.filter(pl.col("split") == "train").head(1).with_columns(split=pl.lit("test"))])
    leaked = dataset_problems(source, "openai", leak)
    assert len(leaked) == 1 and "is in two splits" in leaked[0]


def test_a_broken_operator_template_fails_chat_dataset_naming_it_and_keeps_the_dataset(
    curated: dict[str, Any], tmp_path: Path
) -> None:
    folder: Path = curated["dataset"]
    before = snapshot(folder)
    template = tmp_path / "handler_prompt.txt"
    template.write_text("From @{author_handle}: {mention_text}\n{thread}")  # {thread} is not a handler variable
    result = dg.materialize(
        [*curated["assets"], *(curate_defs.asset_checks or [])],
        selection=[chat_dataset.key],
        resources=curated["resources"],
        run_config={"ops": {"chat_dataset": {"config": {"test_threads": 10, "template_path": str(template)}}}},
        raise_on_error=False,
    )
    message = failure_text(result)
    assert f"prompt template {template}: unknown placeholder thread" in message
    assert snapshot(folder) == before
