"""The curate stage as Dagster assets on the real devnet export, checked against the seeded ground truth."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from void_pipeline.defs.curate.checks import chat_dataset_has_no_split_leak
from void_pipeline.lib.files import write_bytes_atomic
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.testworld.corpus import COLLECTIONS, MEMORY, POST
from void_pipeline.testworld.seeding import SeedResult
from void_pipeline_tests.support.trainer import dataset_sha256
from void_pipeline_tests.support.world import Agent

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


def test_loop_content_is_removed_with_high_recall_and_few_false_positives(
    curated: dict[str, Any], seeded: SeedResult, agent: Agent
) -> None:
    for collection in (MEMORY, POST):
        rejected = pl.read_parquet(curated["filtered"] / f"{collection}.rejected.parquet")
        flagged = set(rejected.filter(pl.col("reason") == "loop_content")["uri"])
        truth = seeded.manifest.filter(
            (pl.col("did") == agent.did) & (pl.col("collection") == collection) & ~pl.col("deleted")
        )
        loops = set(truth.filter(pl.col("loop"))["uri"])
        clean = set(truth.filter(~pl.col("loop"))["uri"])
        assert loops and len(loops & flagged) / len(loops) >= 0.99, collection
        assert len(clean & flagged) / len(clean) <= 0.01, collection


def test_short_and_duplicate_replies_are_removed_and_every_row_accounted(
    curated: dict[str, Any], seeded: SeedResult, agent: Agent
) -> None:
    rejected = pl.read_parquet(curated["filtered"] / f"{POST}.rejected.parquet")
    reasons = dict(zip(rejected["uri"], rejected["reason"], strict=True))
    mine = seeded.manifest.filter((pl.col("did") == agent.did) & (pl.col("collection") == POST))
    shorts = mine.filter(pl.col("short"))["uri"].to_list()
    duplicates = mine.filter(pl.col("duplicate_of").is_not_null())["uri"].to_list()
    assert shorts and all(reasons.get(u) == "too_short" for u in shorts)
    assert duplicates and all(reasons.get(u) == "duplicate" for u in duplicates)
    for collection in COLLECTIONS:
        meta = curated[collection]
        assert meta["dagster/row_count"].value + meta["rejected_rows"].value == meta["input_rows"].value
    # the blocking check ran for every partition, on that partition, and passed
    assert curated["filtered_checks"] == {c: {"filtered_records_are_clean": True} for c in COLLECTIONS}


def run_filtered_check(curated: dict[str, Any], collection: str) -> bool:
    """The blocking check alone, in a run of one partition (as Dagster runs it after a materialization)."""
    from void_pipeline.defs.curate.checks import filtered_records_are_clean
    from void_pipeline.defs.ingest.assets import collection_partitions

    job = dg.define_asset_job(
        "filter_check",
        selection=dg.AssetSelection.checks(filtered_records_are_clean),
        partitions_def=collection_partitions,
    )
    defs = dg.Definitions(
        assets=curated["assets"], asset_checks=[filtered_records_are_clean], jobs=[job], resources=curated["resources"]
    )
    result = defs.resolve_job_def("filter_check").execute_in_process(
        tags={"dagster/partition": collection}, raise_on_error=False
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation.passed


def test_the_filter_check_fails_on_injected_loop_content_in_its_own_partition_only(curated: dict[str, Any]) -> None:
    kept_path: Path = curated["filtered"] / f"{MEMORY}.parquet"
    original = kept_path.read_bytes()
    kept = pl.read_parquet(kept_path)
    loop = "Character sheet: STR 14, DEX 12, CON 13. Armor class 15, hit points 22. Roll a d20 for initiative."
    injected = kept.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(loop)).otherwise("text_norm").alias("text_norm")
    )
    import io

    buffer = io.BytesIO()
    injected.write_parquet(buffer)
    write_bytes_atomic(kept_path, buffer.getvalue())
    try:
        assert not run_filtered_check(curated, MEMORY)  # loop content left in: the blocking check fails
        assert run_filtered_check(curated, POST)  # a broken sibling partition does not fail a fresh one
    finally:
        write_bytes_atomic(kept_path, original)
    assert run_filtered_check(curated, MEMORY)


def test_chat_dataset_is_split_valid_and_renders_the_request_letta_sends(curated: dict[str, Any]) -> None:
    """The default runtime is Letta's: each row is the request the Letta server sends for the demo agent file
    (lib/curate/letta.py), with the example's own time in its system message and tool results."""
    assert curated["checks"] == {"chat_dataset_has_no_split_leak": True, "chat_dataset_tool_calls_are_valid": True}
    folder: Path = curated["dataset"]
    manifest = json.loads((folder / "dataset.json").read_text())
    assert manifest["exact_tokens"] and all(manifest["splits"][s]["examples"] > 0 for s in ("train", "val", "test"))
    assert json.loads((folder / "request.json").read_text())["runtime"] == "letta"
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    index = pl.read_parquet(folder / "index.parquet").filter(pl.col("split") == "train").sort("created_at")
    assert rows and len(rows) == index.height
    for row, when in zip(rows, index["created_at"].to_list(), strict=True):
        system, user, *answer = row["messages"]
        stamp = when.strftime("%Y-%m-%d %I:%M:%S %p") + " UTC+0000"  # Letta's format, the agent's zone (UTC)
        assert system["role"] == "system" and system["content"].startswith("You are void, an AI agent on Bluesky")
        assert (
            "\n\n<memory_blocks>\nThe following memory blocks are currently engaged in your core memory unit:\n\n<void-persona>\n<description>\nWho void is"
            in system["content"]
        )
        assert system["content"].endswith(
            f"- System prompt last recompiled: {stamp}\n"
            "- 0 previous messages between you and the user are stored in recall memory\n</memory_metadata>"
        )
        assert user["role"] == "user" and answer[-1] == {"role": "assistant", "content": ""}
        calls = [m for m in answer if m.get("tool_calls")]
        results = [m for m in answer if m["role"] == "tool"]
        assert len(calls) == len(results) >= 1
        for call, result in zip(calls, results, strict=True):
            text = call["tool_calls"][0]["function"]["arguments"]["text"]
            assert json.loads(result["content"]) == {
                "status": "OK",
                "message": f"Post queued for the reply thread ({len(text)} characters).",
                "time": stamp,
            }
            assert result["content"].startswith('{\n  "status": "OK",\n  "message": ')  # Letta's indent
        assert [t["function"]["name"] for t in row["tools"]] == ["add_post_to_bluesky_reply_thread"]
        assert set(row["tools"][0]["function"]["parameters"]["properties"]) == {"text", "lang"}
    meta = curated["chat_dataset"]
    assert "add_post_to_bluesky_reply_thread" in meta["sample"].value
    # its data version is what training hashes: the UI shows a retrained dataset as a new version, a rebuild of
    # the same data as the same one
    assert curated["chat_dataset_version"] == dataset_sha256(folder)
    window = curated["context_window"]
    assert window["runtime"].value == "letta" and window["agent_type"].value == "letta_v1_agent"
    assert window["tokens_trimmed"].value <= 4096 - 2048 < window["tokens_full"].value


def test_an_injected_split_leak_fails_the_blocking_check(curated: dict[str, Any]) -> None:
    storage: PipelineStorage = curated["storage"]
    index_path = curated["dataset"] / "index.parquet"
    original = index_path.read_bytes()
    index = pl.read_parquet(index_path)
    leak = index.filter(pl.col("split") == "train").head(1).with_columns(pl.lit("test").alias("split"))
    import io

    buffer = io.BytesIO()
    pl.concat([index, leak]).write_parquet(buffer)
    write_bytes_atomic(index_path, buffer.getvalue())
    try:
        result = chat_dataset_has_no_split_leak(storage=storage)
        assert isinstance(result, dg.AssetCheckResult) and not result.passed
    finally:
        write_bytes_atomic(index_path, original)
    healed = chat_dataset_has_no_split_leak(storage=storage)
    assert isinstance(healed, dg.AssetCheckResult) and healed.passed


def test_an_injected_invalid_tool_call_fails_the_blocking_check(curated: dict[str, Any]) -> None:
    from void_pipeline.defs.curate.checks import chat_dataset_tool_calls_are_valid

    storage: PipelineStorage = curated["storage"]
    train_path = curated["dataset"] / "train.jsonl"
    original = train_path.read_bytes()
    lines = original.decode().splitlines()
    row = json.loads(lines[0])
    row["messages"][2]["tool_calls"][0]["function"]["name"] = "delete_everything"  # system, user, the first call
    write_bytes_atomic(train_path, ("\n".join([json.dumps(row), *lines[1:]]) + "\n").encode())
    try:
        result = chat_dataset_tool_calls_are_valid(storage=storage)
        assert isinstance(result, dg.AssetCheckResult) and not result.passed
        assert "openai/train.jsonl:1: unknown tool 'delete_everything'" in str(result.metadata["errors"].value)
    finally:
        write_bytes_atomic(train_path, original)
    healed = chat_dataset_tool_calls_are_valid(storage=storage)
    assert isinstance(healed, dg.AssetCheckResult) and healed.passed


def test_chat_dataset_options_direct_runtime_sharegpt_alpaca_min_date_and_an_operators_template(
    curated: dict[str, Any], tmp_path: Path
) -> None:
    """What docs/curate.md promises of chat_dataset's config, on a copy of the curated data (the session's dataset
    stays the openai one training reads): the direct runtime (the system prompt stored once), the other formats'
    files (direct only: Letta's request has tool turns), min_date and template_path."""
    import shutil

    from void_pipeline.defs.curate.assets import chat_dataset, context_window

    source: PipelineStorage = curated["storage"]
    shutil.copytree(source.root, tmp_path / "data", ignore=shutil.ignore_patterns("train", "mlflow"))
    storage = PipelineStorage(root=str(tmp_path / "data"))
    openai = pl.read_parquet(curated["dataset"] / "index.parquet")
    cutoff: date = openai["created_at"].sort().dt.date()[openai.height // 2]
    template = tmp_path / "mention.txt"  # the handler's syntax: a Python format string
    template.write_text("OPERATOR TEMPLATE for @{author_handle}: {mention_text}\n{tree_view}")

    def build(fmt: str, **extra: Any) -> Path:
        config = {"format": fmt, "test_threads": 10, **extra}
        result = dg.materialize(
            curated["assets"],
            selection=[chat_dataset.key],
            resources={**curated["resources"], "storage": storage},
            run_config={"ops": {"chat_dataset": {"config": config}}},
            raise_on_error=False,
        )
        if not result.success:
            (failure,) = [e for e in result.all_events if e.is_step_failure]
            raise AssertionError(failure.step_failure_data.error.message if failure.step_failure_data.error else "")
        return storage.agent_layout.curate.chat_dataset(fmt)

    try:
        build("sharegpt")
        raise AssertionError("the letta runtime built a sharegpt dataset")
    except AssertionError as err:
        assert "the letta runtime needs the openai format" in str(err)
    windows = dg.materialize(
        curated["assets"],
        selection=[context_window.key],
        resources={**curated["resources"], "storage": storage},
        run_config={"ops": {"context_window": {"config": {"runtime": "direct"}}}},
    )
    assert windows.success
    direct = build("openai")
    system = (direct / "system_prompt.txt").read_text()
    rows = [json.loads(line) for line in (direct / "train.jsonl").read_text().splitlines()]
    assert rows and all(m["role"] != "system" for r in rows for m in r["messages"])
    assert system.startswith("You are void") and system[:200] not in (direct / "train.jsonl").read_text()
    assert all(r["messages"][2]["content"].startswith("Posted reply 1 (") for r in rows)
    assert json.loads((direct / "request.json").read_text())["runtime"] == "direct"

    sharegpt = build("sharegpt", min_date=cutoff.isoformat(), template_path=str(template))
    rows = [json.loads(line) for line in (sharegpt / "train.jsonl").read_text().splitlines()]
    assert rows and all([t["from"] for t in r["conversations"]] == ["human", "gpt"] for r in rows)
    assert all(r["conversations"][0]["value"].startswith("OPERATOR TEMPLATE for @") for r in rows)
    assert all(
        json.loads(r["conversations"][1]["value"])[0]["name"] == "add_post_to_bluesky_reply_thread" for r in rows
    )
    kept = pl.read_parquet(sharegpt / "index.parquet")
    assert 0 < kept.height < openai.height and min(kept["created_at"].dt.date().to_list()) >= cutoff
    assert json.loads((sharegpt / "dataset.json").read_text())["format"] == "sharegpt"
    assert storage.agent_layout.curate.latest_dataset() == sharegpt  # training would refuse it, by name

    alpaca = build("alpaca")
    rows = [json.loads(line) for line in (alpaca / "train.jsonl").read_text().splitlines()]
    assert rows and all(set(r) == {"instruction", "input", "output"} and r["instruction"] for r in rows)
    every = pl.read_parquet(direct / "index.parquet").height  # the same system prompt: the same examples fit
    assert pl.read_parquet(alpaca / "index.parquet").height == every  # no min_date: every example
    assert storage.agent_layout.curate.latest_dataset() == alpaca
