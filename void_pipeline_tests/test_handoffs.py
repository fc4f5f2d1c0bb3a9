"""Stage hand-offs are typed records: a data folder written before them still reads, and a file of another shape
fails in one line naming the file and what it lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from void_pipeline.lib.handoffs import (
    ContextWindowReport,
    EvaluationPointer,
    HandoffError,
    TrainingOutcome,
    read_gates,
)
from void_pipeline.lib.layout import DataLayout


def test_a_training_pointer_written_before_the_records_reads_as_one(tmp_path: Path) -> None:
    train = DataLayout(tmp_path).agent("void").train
    train.root.mkdir(parents=True)
    # the keys runs.finish wrote as a dict before TrainingOutcome existed
    train.latest.write_text(
        json.dumps(
            {
                "run_dir": "/data/train/run-1",
                "adapter": "/data/train/run-1/adapter",
                "base_model": "/models/tiny",
                "config": "/data/train/run-1/axolotl.yml",
                "dataset": "/data/curate/chat_dataset/openai",
                "dataset_sha256": "ab12",
                "mlflow_run": "9f",
                "model_version": "3",
                "dagster_run": "r-1",
            }
        )
    )
    latest = train.read_latest()
    assert latest is not None
    assert latest.adapter == Path("/data/train/run-1/adapter") and latest.run_dir.name == "run-1"
    assert (latest.base_model, latest.model_version, latest.dataset_sha256) == ("/models/tiny", "3", "ab12")


def test_the_training_pointer_round_trips_under_its_old_keys(tmp_path: Path) -> None:
    train = DataLayout(tmp_path).agent("void").train
    outcome = TrainingOutcome(
        Path("/r"), Path("/r/adapter"), "base", Path("/r/axolotl.yml"), Path("/d"), mlflow_run="m"
    )
    train.write_latest(outcome)
    assert json.loads(train.latest.read_text())["adapter"] == "/r/adapter"
    assert train.read_latest() == outcome


def test_an_older_training_pointer_names_the_file_and_the_missing_keys(tmp_path: Path) -> None:
    train = DataLayout(tmp_path).agent("void").train
    train.root.mkdir(parents=True)
    train.latest.write_text(json.dumps({"run_dir": "/r", "adapter": "/r/adapter", "base_model": "base"}))
    with pytest.raises(HandoffError) as raised:
        train.read_latest()
    said = str(raised.value)
    assert said.startswith(f"{train.latest} lacks config, dataset ") and "materialize lora_adapter again" in said
    assert "\n" not in said


@pytest.mark.parametrize(("text", "says"), [("[1, 2]", "holds a list, not a JSON object"), ("{", "is not valid JSON")])
def test_a_pointer_that_is_no_json_object_names_the_file(tmp_path: Path, text: str, says: str) -> None:
    evaluate = DataLayout(tmp_path).agent("void").evaluate
    evaluate.root.mkdir(parents=True)
    evaluate.latest.write_text(text)
    with pytest.raises(HandoffError, match=f"latest.json {says}.*materialize eval_generations again"):
        evaluate.read_latest()


def test_the_dataset_pointer_names_what_it_lacks(tmp_path: Path) -> None:
    curate = DataLayout(tmp_path).agent("void").curate
    assert curate.latest_dataset() is None  # before the first build
    curate.write_latest_dataset("sharegpt")
    assert curate.latest_dataset() == curate.chat_dataset("sharegpt")
    curate.latest_dataset_record.write_text(json.dumps({"fmt": "openai"}))
    with pytest.raises(HandoffError, match=r"chat_dataset/latest.json lacks format .*materialize chat_dataset again"):
        curate.latest_dataset()


def test_an_evaluation_pointer_carries_the_training_it_evaluated(tmp_path: Path) -> None:
    evaluate = DataLayout(tmp_path).agent("void").evaluate
    training = TrainingOutcome(Path("/r"), Path("/r/adapter"), "base", Path("/r/a.yml"), Path("/d"), model_version="2")
    evaluate.write_latest(EvaluationPointer.of(tmp_path / "eval-1", training))
    read = evaluate.read_latest()
    assert read is not None and read.folder == tmp_path / "eval-1"
    assert (read.adapter, read.model_version, read.config) == (Path("/r/adapter"), "2", Path("/r/a.yml"))


def test_gates_are_read_from_the_report_and_a_report_without_them_is_named(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"blocking": {"tool_call_validity": {"passed": False, "why": "0.1 < 0.9"}}}))
    gates = read_gates(report)
    assert list(gates) == ["tool_call_validity"] and not gates["tool_call_validity"].passed
    assert gates["tool_call_validity"].why == "0.1 < 0.9"
    report.write_text(json.dumps({"scores": {}}))
    with pytest.raises(HandoffError, match=f"{report} lacks blocking"):
        read_gates(report)


def test_a_context_report_without_its_variants_tokens_is_named(tmp_path: Path) -> None:
    curate = DataLayout(tmp_path).agent("void").curate
    curate.context_window.mkdir(parents=True)
    curate.context_report.write_text(json.dumps({"selected": "trimmed", "tokens": {"full": 9, "trimmed": 5}}))
    report = ContextWindowReport.read(curate.context_report)
    assert report is not None and report.tokens["trimmed"] == 5 and report.prompt_template is None
    curate.context_report.write_text(json.dumps({"selected": "trimmed"}))
    with pytest.raises(HandoffError, match=r"report.json lacks tokens .*materialize context_window again"):
        ContextWindowReport.read(curate.context_report)
