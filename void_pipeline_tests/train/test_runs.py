"""Training runs planned and summarized in lib (no Dagster, no trainer): which folder, resume or not, what refuses
a run before a GPU is spent, and what a finished run leaves (plot, MLflow, train/latest.json)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from void_pipeline.lib.layout import DataLayout, DatasetPaths
from void_pipeline.lib.model import ChosenModel, choose_model
from void_pipeline.lib.train import runs, training
from void_pipeline_tests.support.trainer import dataset_sha256

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


@pytest.fixture()
def setup(curated: dict[str, Any], corpus_tokenizer: Path, tmp_path: Path) -> tuple[Path, ChosenModel, Any]:
    """A copy of the curated dataset, the tests' model choice (a folder with the tokenizer and a config stands in for
    the weights: nothing here loads them), and an agent's train folder."""
    dataset = tmp_path / "chat_dataset" / "openai"
    shutil.copytree(curated["dataset"], dataset)
    model = tmp_path / "model"  # what the checks look at: a config.json and the tokenizer
    model.mkdir()
    shutil.copy(corpus_tokenizer / "tokenizer.json", model / "tokenizer.json")
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    chosen = choose_model("llama-3.1-8b-instruct", ["cpu", "tiny"], str(model), 4096)
    return dataset, chosen, DataLayout(tmp_path / "data").agent("void").train


def test_a_plan_writes_the_effective_config_of_the_chosen_model(setup: tuple[Path, ChosenModel, Any]) -> None:
    dataset, chosen, train = setup
    plan = runs.plan_training(train, dataset, chosen, {"max_steps": 3}, "run-a")
    config = json.loads(json.dumps(plan.config))
    assert plan.run == train.run("run-a") and plan.resumed is None and plan.start_step == 0
    assert config["base_model"] == chosen.weights and config["sequence_len"] == 4096 and config["max_steps"] == 3
    assert config["output_dir"] == str(plan.run.adapter) and config["dataset_prepared_path"] == str(plan.run.prepared)
    assert config["datasets"][0]["path"] == str(dataset / "train.jsonl")
    # the session's dataset is Letta's: each row carries its own system message (it holds the example's time), so
    # none is added to every row; a direct dataset's, stored once, is
    assert "default_system_message" not in config
    assert plan.run.config.exists() and plan.data_hash == dataset_sha256(dataset)
    request = json.loads((dataset / "request.json").read_text())
    (dataset / "request.json").write_text(json.dumps({**request, "runtime": "direct", "system": "You are void."}))
    direct = runs.run_config(chosen, dataset, train.run("run-b"), {}, None)
    assert direct["default_system_message"] == (dataset / "system_prompt.txt").read_text()


def test_a_killed_run_is_resumed_and_a_finished_one_is_never_reused(setup: tuple[Path, ChosenModel, Any]) -> None:
    dataset, chosen, train = setup
    first = runs.plan_training(train, dataset, chosen, {}, "run-a")
    runs.begin(first, "run-a")
    checkpoint = first.run.adapter / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    (first.run.adapter / "checkpoint-7").mkdir()  # half-saved (no trainer_state.json): skipped
    runs.failed(first)

    again = runs.plan_training(train, dataset, chosen, {}, "run-b")
    assert again.run == first.run and again.resumed and again.start_step == 5
    assert again.config["resume_from_checkpoint"] == str(checkpoint)
    other = runs.plan_training(train, dataset, chosen, {"max_steps": 2}, "run-c")  # another training: a new folder
    assert other.run == train.run("run-c") and other.resumed is None

    training.write_state(first.run, status=training.COMPLETE)
    fresh = runs.plan_training(train, dataset, chosen, {}, "run-d")
    assert fresh.run == train.run("run-d") and fresh.resumed is None  # the finished adapter stays as it is
    training.write_state(fresh.run, status=training.COMPLETE)
    with pytest.raises(runs.CannotTrain, match="holds a finished adapter; it is never overwritten"):
        runs.plan_training(train, dataset, chosen, {}, "run-d")


def test_what_refuses_a_run_before_it_starts(setup: tuple[Path, ChosenModel, Any], tmp_path: Path) -> None:
    dataset, chosen, train = setup
    with pytest.raises(runs.CannotTrain, match="no chat dataset has been built"):
        runs.plan_training(train, None, chosen, {}, "run-a")
    sharegpt = dataset.parent / "sharegpt"
    shutil.copytree(dataset, sharegpt)
    with pytest.raises(runs.CannotTrain, match="latest chat_dataset is in the sharegpt format"):
        runs.plan_training(train, sharegpt, chosen, {}, "run-a")
    qwen = choose_model("qwen2.5-7b-instruct", ["cpu", "tiny"], None, 2048)
    with pytest.raises(runs.CannotTrain) as refused:
        runs.plan_training(train, dataset, qwen, {}, "run-a")
    errors = refused.value.errors  # one line per problem
    assert [e.split(" and ")[0] for e in errors[:3]] == [
        "the dataset was built for sequence_len 4096",
        "the dataset was built for model family llama",
        "the dataset was built for base model meta-llama/Llama-3.1-8B-Instruct",
    ]
    assert len(errors) == 4 and "sequence_len 2048 is below every training example" in errors[3]
    assert not train.run("run-a").config.exists()  # nothing written for a refused run


def test_a_finished_run_is_summarized_tracked_and_handed_on(
    setup: tuple[Path, ChosenModel, Any], tmp_path: Path
) -> None:
    import mlflow

    dataset, chosen, train = setup
    plan = runs.plan_training(train, dataset, chosen, {"max_steps": 4}, "run-a")
    runs.begin(plan, "run-a")
    lines = [
        {"kind": "eval", "step": 0, "eval_loss": 7.5},
        *({"kind": "train", "step": s, "loss": 7.4 - s / 10, "learning_rate": 0.005} for s in range(1, 5)),
        {"kind": "eval", "step": 4, "eval_loss": 7.1},
    ]
    plan.run.metrics.write_text("".join(json.dumps(e) + "\n" for e in lines))
    plan.output_dir.mkdir(parents=True)
    (plan.output_dir / "adapter_model.safetensors").write_bytes(b"weights")
    store = tmp_path / "mlflow"
    summary = runs.finish(
        plan,
        train,
        chosen,
        tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
        mlflow_store=store,
        registered_model="void-lora-test",
        dagster_run="run-a",
    )
    assert (summary.val_loss_before, summary.val_loss_after) == (7.5, 7.1) and abs(summary.final_loss - 7.0) < 1e-9
    assert summary.plot == plan.run.loss_plot and summary.plot.read_bytes().startswith(b"\x89PNG")
    latest = train.read_latest()
    assert latest is not None and latest.run_dir == plan.run.root and latest.dagster_run == "run-a"
    assert latest.mlflow_run == summary.tracked.run_id and latest.model_version == summary.tracked.model_version
    assert training.read_state(plan.run)["status"] == training.COMPLETE
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    assert [m.value for m in client.get_metric_history(summary.tracked.run_id, "eval_loss")] == [7.5, 7.1]
    assert client.get_run(summary.tracked.run_id).data.tags["axolotl_config"] == "llama-3.1-8b-instruct"
    # the training set by post: the train split's sources, digested as sha256 of the sorted distinct URIs
    train_rows = pl.read_parquet(DatasetPaths(dataset).index).filter(pl.col("split") == "train")
    uris = sorted({uri for row in train_rows["source_uris"].to_list() for uri in row})
    digest = hashlib.sha256("\n".join(uris).encode()).hexdigest()
    assert latest.source_uris_sha256 == digest
    assert client.get_run(summary.tracked.run_id).data.tags["source_uris_sha256"] == digest
    assert sorted(pl.read_parquet(plan.run.training_set)["example_id"]) == sorted(train_rows["example_id"])
