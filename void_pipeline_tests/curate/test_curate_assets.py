"""The curate stage as Dagster assets on the real devnet export, checked against the seeded ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from void_pipeline.defs.curate.checks import chat_dataset_has_no_split_leak
from void_pipeline.lib.corpus import COLLECTIONS, MEMORY, POST
from void_pipeline.lib.files import write_bytes_atomic
from void_pipeline.lib.seeding import SeedResult
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline_tests.conftest import Agent


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
    assert curated["checks"].get("filtered_records_are_clean", True)


def test_chat_dataset_is_split_valid_and_stores_the_system_prompt_once(curated: dict[str, Any]) -> None:
    assert curated["checks"] == {"chat_dataset_has_no_split_leak": True, "chat_dataset_tool_calls_are_valid": True}
    folder: Path = curated["dataset"]
    system = (folder / "system_prompt.txt").read_text()
    manifest = json.loads((folder / "dataset.json").read_text())
    assert manifest["exact_tokens"] and all(manifest["splits"][s]["examples"] > 0 for s in ("train", "val", "test"))
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert rows and all(m["role"] != "system" for r in rows for m in r["messages"])
    assert system[:200] not in (folder / "train.jsonl").read_text()
    meta = curated["chat_dataset"]
    assert meta["copy_prompt_layout_bytes"].value > 3 * meta["dataset_bytes"].value
    assert "add_post_to_bluesky_reply_thread" in meta["sample"].value
    assert curated["context_window"]["tokens_distilled"].value * 10 <= curated["context_window"]["tokens_full"].value
    assert curated["context_window"]["tokens_trimmed"].value <= 4096 - 2048


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
        result = chat_dataset_has_no_split_leak(endpoint=curated["resources"]["endpoint"], storage=storage)
        assert isinstance(result, dg.AssetCheckResult) and not result.passed
    finally:
        write_bytes_atomic(index_path, original)
    healed = chat_dataset_has_no_split_leak(endpoint=curated["resources"]["endpoint"], storage=storage)
    assert isinstance(healed, dg.AssetCheckResult) and healed.passed
