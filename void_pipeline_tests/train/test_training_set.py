"""An adapter's training set by post: recorded from the dataset's index, named by a digest, counted against the
deletions ledger by the checks, and a reason for the weekly retrain."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from void_pipeline.defs.train.checks import deletions_result
from void_pipeline.lib.handoffs import TrainingOutcome
from void_pipeline.lib.ingest.deletions import Gone, record_deletions
from void_pipeline.lib.layout import DataLayout, DatasetPaths
from void_pipeline.lib.train.runs import retrain_decision
from void_pipeline.lib.train.training_set import deleted_since, record_training_set


def post(name: str) -> str:
    return f"at://did:plc:{name}/app.bsky.feed.post/{name}0"


INDEX = [  # example id, split, source URIs
    (post("v1"), "train", [post("ada"), post("bob"), post("v1")]),
    (post("v2"), "train", [post("ada"), post("cat"), post("v2")]),
    (post("v3"), "train", [post("dan"), post("v3")]),
    (post("v4"), "val", [post("eve"), post("v4")]),
]


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, DataLayout]:
    """A dataset folder whose index is INDEX, and an agent's run folder."""
    dataset = tmp_path / "chat_dataset" / "openai"
    dataset.mkdir(parents=True)
    index = pl.DataFrame(
        [{"example_id": e, "split": s, "source_uris": u, "tokens": 10} for e, s, u in INDEX],
        schema={"example_id": pl.String, "split": pl.String, "source_uris": pl.List(pl.String), "tokens": pl.Int64},
    )
    index.write_parquet(DatasetPaths(dataset).index)
    layout = DataLayout(tmp_path / "data")
    return dataset, layout.agent("void").train.run("run-a").training_set, layout


def test_the_training_set_is_the_train_split_by_post_with_a_digest_of_its_uris(
    folders: tuple[Path, Path, DataLayout],
) -> None:
    dataset, path, _ = folders
    recorded = record_training_set(dataset, path)
    # by hand: the train split's distinct sources, sorted, one per line
    uris = [post(n) for n in ("ada", "bob", "cat", "dan", "v1", "v2", "v3")]
    assert recorded.digest == hashlib.sha256("\n".join(uris).encode()).hexdigest()
    assert (recorded.examples, recorded.uris) == (3, 7)
    saved = pl.read_parquet(path)
    assert saved["example_id"].to_list() == [post("v1"), post("v2"), post("v3")]  # the val example is not in it


def test_deleted_examples_are_counted_by_reason_and_the_check_warns(folders: tuple[Path, Path, DataLayout]) -> None:
    dataset, path, layout = folders
    record_training_set(dataset, path)
    ingest = layout.agent("void").ingest
    quiet = deletions_result(path, ingest, "unused")
    assert quiet.passed and quiet.metadata["deleted_examples"] == dg.MetadataValue.int(0)

    record_deletions(ingest, [Gone(post("eve"), "deleted", "recheck", own=False)])  # only the val example shows it
    assert deleted_since(path, ingest).examples == 0
    record_deletions(
        ingest,
        [Gone(post("ada"), "deactivated", "recheck", own=False), Gone(post("v3"), "deleted", "own_export", own=True)],
    )
    found = deleted_since(path, ingest)
    assert (found.examples, found.training_examples) == (3, 3)
    assert found.by_reason == {"deleted": 1, "deactivated": 2}
    assert sorted(found.uris) == [post("ada"), post("v3")]
    assert found.summary() == "3 examples of this adapter's training set were deleted since"

    warned = deletions_result(path, ingest, "unused")
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.metadata["deleted_examples"] == dg.MetadataValue.int(3)


def test_a_dataset_without_source_uris_gives_ids_and_no_digest(folders: tuple[Path, Path, DataLayout]) -> None:
    dataset, path, layout = folders
    index = DatasetPaths(dataset).index
    pl.read_parquet(index).drop("source_uris").write_parquet(index)
    recorded = record_training_set(dataset, path)
    assert recorded.digest is None and recorded.examples == 3
    found = deleted_since(path, layout.agent("void").ingest)
    assert not found.known and "no source URIs" in found.summary()


def test_an_older_training_hand_off_without_the_digest_still_loads(tmp_path: Path) -> None:
    old = {"run_dir": "/r", "adapter": "/r/adapter", "base_model": "m", "config": "/r/a.yml", "dataset": "/d"}
    (tmp_path / "latest.json").write_text(json.dumps(old))
    loaded = TrainingOutcome.read(tmp_path / "latest.json")
    assert loaded is not None and loaded.source_uris_sha256 is None and loaded.run_dir == Path("/r")


@pytest.mark.parametrize(
    ("deleted", "min_deleted", "changed", "retrain", "cause", "says"),
    [
        (None, 1, True, False, None, "retraining waits for 500"),  # the check has not counted yet
        (0, 1, True, False, None, "retraining waits for 500"),
        (2, 3, True, False, None, "or 3 deleted examples (2 so far)"),
        (3, 3, True, True, "deletions", "3 examples of the adapter's training set were deleted since"),
        (3, 3, False, False, None, "chat_dataset is the one it was trained on"),
        (50, 0, True, False, None, "retraining waits for 500"),  # 0: deletions never retrain
    ],
)
def test_deleted_training_examples_are_a_reason_to_retrain(
    deleted: int | None, min_deleted: int, changed: bool, retrain: bool, cause: str | None, says: str
) -> None:
    decision = retrain_decision(1010, 1000, 500, deleted, min_deleted, changed)
    assert (decision.retrain, decision.cause) == (retrain, cause)
    assert says in decision.reason
    assert retrain_decision(1600, 1000, 500, 5, 1, False).cause == "growth"  # growth alone still retrains
