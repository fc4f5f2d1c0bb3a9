"""What the Dagster UI shows of an evaluation and a promotion (lib/evaluate/metadata.py, report.py gates,
lib/serve/metadata.py), on a report built from hand-written answers: a per-thread table, numbers named with their
unit, plots inline, links to MLflow, gate checks with their threshold, and a reply command that parses."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from void_pipeline.defs.evaluate.assets import gate_results
from void_pipeline.defs.metadata import as_metadata
from void_pipeline.lib.evaluate.metadata import report_metadata, thread_table, tracking_metadata
from void_pipeline.lib.evaluate.report import EvalReport, Gates, build_report, length_plot, metric_plot
from void_pipeline.lib.handoffs import ServingOutcome
from void_pipeline.lib.layout import BundlePaths, DataLayout, EvaluationPaths
from void_pipeline.lib.serve.bundle import Bundle
from void_pipeline.lib.serve.client import Answer, Sampling
from void_pipeline.lib.serve.metadata import reply_command
from void_pipeline.lib.train.tracking import TrackedRun
from void_pipeline_tests.support.evaluation import generations

IDS = [f"e{i:02d}" for i in range(30)]
SHEET = "Str 8, Dex 14, Con 12, Wis 10. Roll initiative."
LONG = "Analysis: " + "the loop feeds itself " * 20  # 450 characters


def answers() -> pl.DataFrame:
    """Tuned: 5 answers with no call, 1 character sheet, 24 replies (25 of 30 valid; 1 sheet in 30 answers, 33.3 per
    1,000); base: two valid posts each."""
    tuned = {e: [] if i < 5 else [SHEET] if i == 5 else ["Analysis: a feedback loop."] for i, e in enumerate(IDS)}
    base = {e: ["hello there!", "another post"] for e in IDS}
    return generations({"base": base, "tuned": tuned})


def heldout() -> pl.DataFrame:
    prompt = 'A post mentions you.\n\nTHE POST TO ANSWER:\n"@void what is {e}?"\n\nTHE THREAD UP TO IT:\n...'
    return pl.DataFrame(
        {"example_id": IDS, "prompt": [prompt.format(e=e) for e in IDS], "calls": [[LONG]] + [["A loop."]] * 29}
    )


def built(tmp_path: Path) -> tuple[EvalReport, EvaluationPaths, pl.DataFrame]:
    rows, threads = answers(), heldout()
    real = {e: list(c) for e, c in zip(threads["example_id"], threads["calls"], strict=True)}
    report = build_report(rows, real, None, Gates(), heldout_loss={"base": 2.0, "tuned": 1.5})
    paths = EvaluationPaths(tmp_path)
    length_plot(rows, list(real.values()), paths.length_plot)
    metric_plot(report, paths.metric_plot)
    return report, paths, threads


def shown(values: dict[str, Any]) -> dict[str, Any]:
    """The metadata as Dagster stores it (a materialization normalizes plain numbers into metadata values)."""
    return dict(dg.AssetMaterialization("eval_report", metadata=as_metadata(values)).metadata)


UNIT_ENDINGS = (
    "_share",
    "_per_1000",
    "_per_answer",
    "_per_post",
    "_graphemes",
    "_posts",
    "_bits",
    "_statistic",
    "_cosine",
    "_nats_per_token",
)


def test_the_report_shows_a_thread_table_numbers_with_units_plots_inline_and_links(tmp_path: Path) -> None:
    report, paths, threads = built(tmp_path)
    tracked = TrackedRun("run1", "7", "sqlite:///x/mlflow.db", "void-lora", "3")
    mlflow = tracking_metadata(tracked, "run run1, void-lora v3 → candidate", None)
    metadata = shown(report_metadata(report, paths, thread_table(answers(), threads), None, 4, mlflow, None))

    table = metadata["threads"]
    assert isinstance(table, dg.TableMetadataValue) and len(table.records) == 25  # bounded: 30 threads answered
    first = table.records[0].data
    assert first["thread"] == '"@void what is e00?"' and first["example_id"] == "e00"
    assert first["tuned_answer"] == "(no call)" and first["tuned_valid"] is False and first["base_valid"] is True
    assert first["base_answer"] == "hello there! / another post"
    assert len(str(first["real_reply"])) == 200 and str(first["real_reply"]).endswith("…")  # cut to a readable length
    assert [c.name for c in table.schema.columns][:2] == ["thread", "real_reply"]

    validity, sheets = metadata["tuned_call_validity_share"], metadata["tuned_character_sheet_per_1000"]
    assert isinstance(validity, dg.FloatMetadataValue) and validity.value == pytest.approx(25 / 30, abs=1e-4)
    assert isinstance(sheets, dg.FloatMetadataValue) and sheets.value == pytest.approx(1000 / 30, abs=1e-4)
    assert metadata["tuned_heldout_loss_nats_per_token"].value == 1.5
    ratio = metadata["post_length_ratio_tuned_to_real"]  # mean post length: 24 of 26 and one of 47 characters, over
    real_mean = (450 + 29 * 7) / 30  # the real replies': one of 450 and 29 of 7
    assert isinstance(ratio, dg.FloatMetadataValue) and ratio.value == pytest.approx(
        (24 * 26 + 47) / 25 / real_mean, abs=1e-4
    )
    numbers = [k for k, v in metadata.items() if isinstance(v, dg.FloatMetadataValue)]
    assert len(numbers) >= 15
    assert all(k.endswith(UNIT_ENDINGS) for k in numbers if k != "post_length_ratio_tuned_to_real"), numbers
    assert isinstance(metadata["examples"], dg.IntMetadataValue) and metadata["examples"].value == 30

    for plot in ("length_plot", "metric_plot"):
        assert isinstance(metadata[plot], dg.MarkdownMetadataValue)
        assert "](data:image/png;base64,iVBOR" in metadata[plot].value  # a PNG, inline
    assert "| call_validity ↑ | share of answers |" in metadata["report"].value
    assert "| character_sheet ↓ | per 1,000 answers |" in metadata["report"].value
    run, version = metadata["mlflow_run"], metadata["mlflow_model_version"]
    assert isinstance(run, dg.UrlMetadataValue) and run.value.startswith(
        "http://127.0.0.1:5000/#/experiments/7/runs/run1"
    )
    assert isinstance(version, dg.UrlMetadataValue) and "/#/models/void-lora/versions/3" in version.value
    assert metadata["mlflow"].value == "run run1, void-lora v3 → candidate"
    untracked = tracking_metadata(None, "no MLflow run recorded for this adapter", None)
    assert untracked == {"mlflow": "no MLflow run recorded for this adapter"}


def test_gate_checks_carry_their_threshold_and_measure_as_numbers(tmp_path: Path) -> None:
    report, _, _ = built(tmp_path)
    results = {r.check_name: r for r in gate_results(report)}
    validity = results["tool_call_validity"]
    assert validity.passed is False and "83.3% of tuned answers" in str(validity.metadata["why"].value)
    assert validity.metadata["min_share"].value == 0.9
    assert validity.metadata["measured_share"].value == pytest.approx(25 / 30, abs=1e-4)
    sheets = results["character_sheet_rate"]
    assert sheets.passed is False and sheets.metadata["max_per_1000"].value == 5.0
    assert sheets.metadata["measured_per_1000"].value == pytest.approx(1000 / 30, abs=1e-4)
    warning = results["tuned_beats_base"]
    assert warning.severity == dg.AssetCheckSeverity.WARN
    assert warning.metadata["tuned_heldout_loss_nats_per_token"].value == 1.5
    assert warning.metadata["base_heldout_loss_nats_per_token"].value == 2.0
    assert all(isinstance(v, dg.FloatMetadataValue) for k, v in validity.metadata.items() if k != "why")


def test_every_check_in_the_code_location_says_what_it_checks() -> None:
    from void_pipeline.definitions import defs

    specs = [spec for a in defs.resolve_asset_graph().assets_defs for spec in a.check_specs]
    names = {spec.name for spec in specs}
    assert {"tool_call_validity", "character_sheet_rate", "tuned_beats_base", "smoke_answer_valid"} <= names
    assert [spec.name for spec in specs if not spec.description] == []
    gate = next(spec for spec in specs if spec.name == "tool_call_validity")
    assert "min_call_validity" in str(gate.description)  # the threshold it holds the model to


def bundle(tmp_path: Path) -> Bundle:
    sampling = Sampling(0.7, 0.95, 200, 0, 1, 6)
    return Bundle(1, BundlePaths(tmp_path / "b"), "base", "void-demo", "hermes", 8, sampling, "adapter", None, {}, "")


def answered() -> Answer:
    return Answer(["hi"], 0, "", 1, "stop", 10, 5, 0.5, [])


def test_the_reply_command_runs_as_the_reply_subcommand_parses_it_without_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from void_pipeline.cli_serve import add_commands

    monkeypatch.setenv("VOID_SERVE_API_KEY", "s3cret-key")
    layout = DataLayout(tmp_path / "my data").agent("void-demo")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    served = ServingOutcome("http://127.0.0.1:8123", True, "loaded", answered(), ["void-demo"])
    text = str(reply_command(served, bundle(tmp_path), layout))
    assert "s3cret-key" not in text and "export VOID_SERVE_API_KEY=" in text
    (line,) = [line for line in text.splitlines() if line.startswith("./void-pipeline reply")]
    args = parser.parse_args(shlex.split(line)[1:])
    assert (args.command, args.uri, args.endpoint, args.model) == ("reply", "AT_URI", served.url, "void-demo")
    assert (Path(args.data), args.agent) == (tmp_path / "my data", "void-demo")

    gone = ServingOutcome("http://127.0.0.1:8123", False, "temporary", answered(), [])
    lines = [
        line for line in str(reply_command(gone, bundle(tmp_path), layout)).splitlines() if "void-pipeline" in line
    ]
    up, reply = (parser.parse_args(shlex.split(line)[1:]) for line in lines)
    assert (up.command, up.action, Path(up.data)) == ("serve", "up", tmp_path / "my data")
    assert reply.endpoint is None  # the managed server serve up starts
