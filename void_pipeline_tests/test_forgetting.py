"""Deleted posts followed from the devnet out of the training data: a fresh agent's threads are exported, curated and
trained on (the tiny model, two steps); another account deletes the parent post the agent answered and the agent
deletes one of its replies; after the next ingest (with thread_context's re-check) both examples are gone from the
new dataset's index, and the adapter's deletion check — executed alone, without retraining — counts them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from void_pipeline.defs.curate.assets import chat_dataset, context_window, filtered_records
from void_pipeline.defs.ingest.assets import raw_records, thread_context
from void_pipeline.defs.train.assets import lora_adapter
from void_pipeline.defs.train.checks import lora_adapter_deleted_examples
from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.layout import DatasetPaths
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline_tests.support.fresh_agent import FreshWorld
from void_pipeline_tests.support.runs import failure_text
from void_pipeline_tests.support.world import model_choice

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

ASSETS = [raw_records, thread_context, filtered_records, context_window, chat_dataset]
# test_threads 0: the newest thread is validation, every older one is in the train split
DATASET_CONFIG = {"ops": {"chat_dataset": {"config": {"test_threads": 0}}}}


def curate(resources: dict[str, Any], recheck: bool = False) -> dict[str, Any]:
    """raw_records (the posts), thread_context (re-checking what it holds when asked), filtered_records and
    chat_dataset; chat_dataset's metadata."""
    assert dg.materialize(ASSETS, selection=[raw_records.key], partition_key=POST, resources=resources).success
    config = {"ops": {"thread_context": {"config": {"recheck": recheck}}}}
    assert dg.materialize(ASSETS, selection=[thread_context.key], resources=resources, run_config=config).success
    assert dg.materialize(ASSETS, selection=[filtered_records.key], partition_key=POST, resources=resources).success
    keys = [context_window.key, chat_dataset.key]
    result = dg.materialize(ASSETS, selection=keys, resources=resources, run_config=DATASET_CONFIG)
    assert result.success
    return dict(result.asset_materializations_for_node("chat_dataset")[0].metadata)


def index_sources(storage: PipelineStorage) -> dict[str, list[str]]:
    index = pl.read_parquet(DatasetPaths(storage.agent_layout.curate.chat_dataset("openai")).index)
    return dict(zip(index["example_id"].to_list(), index["source_uris"].to_list(), strict=True))


def test_a_deleted_parent_and_a_deleted_reply_leave_the_next_dataset_and_are_counted_by_the_adapter_check(
    devnet: DevnetInfo, corpus_tokenizer: Path, tiny_model: Path, trainer_bin: Path, tmp_path: Path
) -> None:
    world = FreshWorld.create(devnet, "forgetout")
    start = datetime.now(UTC) - timedelta(days=30)  # backdated, and in order: the threads' ages decide the split

    def at(hours: int) -> datetime:
        return start + timedelta(hours=hours)

    kept_root = world.post(world.other, "What does entropy have to do with forgetting things?", created_at=at(0))
    kept = world.post(world.agent, "Forgetting is entropy winning, one memory at a time.", kept_root, at(1))
    root = world.post(world.other, "Is a deleted post really gone from everywhere?", created_at=at(2))
    parent = world.post(world.other, "I am asking because I regret something I wrote.", root, at(3))
    answered = world.post(world.agent, "Deleted means gone, and I will honour that too.", parent, at(4))
    other_root = world.post(world.other, "Do you ever wish you could unsay something?", created_at=at(5))
    regretted = world.post(world.agent, "Often. This reply is one I would take back.", other_root, at(6))
    val_root = world.post(world.other, "Last question: what is the newest thing you learned?", created_at=at(7))
    world.post(world.agent, "That posts can leave training data when their authors leave.", val_root, at(8))

    storage = PipelineStorage(root=str(tmp_path / "data"))
    resources: dict[str, Any] = {
        "endpoint": world.endpoint(),
        "storage": storage,
        "model": model_choice(local_path=str(corpus_tokenizer)),
    }
    curate(resources)
    before = index_sources(storage)
    assert {kept.uri, answered.uri, regretted.uri} <= set(before)
    assert before[answered.uri] == [root.uri, parent.uri, answered.uri]  # by hand: the thread, then the reply

    training = {
        **resources,
        "model": model_choice(local_path=str(tiny_model)),
        "trainer": Trainer(overrides={"max_steps": 2, "logging_steps": 1}, python=str(trainer_bin / "python")),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        trained = dg.materialize(
            [*ASSETS, lora_adapter, lora_adapter_deleted_examples],
            selection=[lora_adapter.key],
            resources=training,
            instance=instance,
            raise_on_error=False,
        )
        assert trained.success, failure_text(trained)
        [first] = trained.get_asset_check_evaluations()  # the check ran with the adapter: nothing deleted yet
        assert first.passed and first.metadata["deleted_examples"].value == 0

        world.delete(world.other, parent)
        world.delete(world.agent, regretted)
        metadata = curate(resources, recheck=True)
        after = index_sources(storage)
        assert answered.uri not in after and regretted.uri not in after and kept.uri in after
        assert not {parent.uri, regretted.uri} & {uri for sources in after.values() for uri in sources}
        assert "deleted_upstream" in metadata["skipped"].value and parent.uri in metadata["deleted_upstream"].value

        checked = dg.materialize(  # the check alone: no training
            [*ASSETS, lora_adapter, lora_adapter_deleted_examples],
            selection=dg.AssetSelection.checks(lora_adapter_deleted_examples),
            resources=training,
            instance=instance,
        )
        assert not checked.get_asset_materialization_events(), "nothing was materialized"
        [verdict] = checked.get_asset_check_evaluations()
        assert not verdict.passed and verdict.severity == dg.AssetCheckSeverity.WARN
        assert verdict.metadata["deleted_examples"].value == 2
        uris = verdict.metadata["deleted_uris"].value
        assert isinstance(uris, list) and set(uris) == {parent.uri, regretted.uri}
        assert verdict.metadata["by_reason"].value == {"deleted": 2}
