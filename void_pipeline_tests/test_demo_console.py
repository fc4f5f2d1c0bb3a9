"""The demo's console (testworld/demo_console.py): libraries' and child processes' lines in the log, the story on
the terminal, errors with the log's last lines, and the evaluation's headline table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.testworld.cli import post_to_answer, seeding_progress
from void_pipeline.testworld.demo_console import Story, evaluation_table, output_to_log
from void_pipeline.testworld.location_runs import LocationTarget, location_runs


def test_library_and_child_lines_go_to_the_log_and_the_story_to_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "logs" / "demo.log"
    with output_to_log(log):
        print("[demo] the story")
        os.write(2, b"a library's warning\n")
        child = "import sys; print('converter: writing tensors'); print('vLLM: loading', file=sys.stderr)"
        subprocess.run([sys.executable, "-c", child], check=True)
    print("after the block")
    terminal = capfd.readouterr()
    logged = log.read_text()
    for line in ("a library's warning", "converter: writing tensors", "vLLM: loading"):
        assert line in logged and line not in terminal.out + terminal.err
    assert "[demo] the story" in terminal.out and "[demo] the story" not in logged
    assert "after the block" in terminal.out  # the terminal is back


def test_an_error_shows_the_end_of_the_log_and_where_it_is(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "demo.log"
    with pytest.raises(RuntimeError), output_to_log(log):
        subprocess.run([sys.executable, "-c", "print('merge-lora: out of memory')"], check=True)
        raise RuntimeError("the merge failed")
    terminal = capfd.readouterr()
    assert "the merge failed" in terminal.err
    assert "merge-lora: out of memory" in terminal.err and str(log) in terminal.err


def test_the_story_names_each_stage_once_and_each_asset_with_its_key_numbers(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    target = LocationTarget("void_pipeline_tests.support.story_location", "story", REPO_ROOT)
    assets = [dg.AssetKey(name) for name in ("chat_dataset", "lora_adapter", "merged_model")]
    groups = {"chat_dataset": "curate", "lora_adapter": "train", "merged_model": "train"}
    with (
        output_to_log(tmp_path / "demo.log") as terminal,
        dg.instance_for_test(temp_dir=str(tmp_path)) as instance,
        location_runs(instance, target) as runs,
    ):
        run = runs.materialize(assets, {}, on_event=Story(terminal, groups).tell)
    assert run.status == dg.DagsterRunStatus.FAILURE
    lines = capfd.readouterr().out.splitlines()
    assert lines[0] == "[demo] curate: starting (chat_dataset)"
    assert lines[1].startswith("  curate   chat_dataset (") and lines[1].endswith("): train 1,062, validation 21")
    assert lines[2] == "[demo] train: starting (lora_adapter)"
    assert lines[3].startswith("  train    lora_adapter (")
    assert lines[3].endswith("): steps 24, validation loss 4.241 → 2.270")
    assert lines[4].startswith("  train    merged_model FAILED after ")
    assert len(lines) == 5  # no Dagster event lines, no library lines, no stage line for the check's step


def test_the_evaluation_table_shows_intervals_and_says_which_rows_count_per_1000() -> None:
    report = {
        "scores": {
            "base": {"call_validity": 0.0, "empty_answer": 1000.0, "heldout_loss": 4.5},
            "tuned": {"call_validity": 0.292, "empty_answer": 583.0, "heldout_loss": 2.521},
            "real": {"call_validity": 1.0, "empty_answer": 0.0},
        },
        "intervals": {"base": {"call_validity": [0.0, 0.138]}, "tuned": {"call_validity": [0.149, 0.492]}},
    }
    lines = evaluation_table(report).splitlines()
    assert lines[0].split() == ["metric", "base", "tuned", "real"]
    assert lines[1].split() == [
        "call_validity",
        "↑",
        "0.000",
        "[0.000,",
        "0.138]",
        "0.292",
        "[0.149,",
        "0.492]",
        "1.000",
    ]
    assert lines[2].split() == ["empty_answer", "per", "1,000", "↓", "1,000", "583", "0"]
    assert lines[3].split() == ["heldout_loss", "↓", "4.500", "2.521", "-"]
    assert len(lines) == 4  # rows no model has are left out


def test_the_post_to_answer_is_the_line_after_the_handlers_marker() -> None:
    prompt = 'A Bluesky post from @hana.bsky.test mentions you.\n\nTHE POST TO ANSWER:\n"is it getting worse?"\n\nmore'
    assert post_to_answer(prompt) == '"is it getting worse?"'
    assert post_to_answer("x" * 150) == "x" * 97 + "..."  # no marker: the prompt, shortened


def test_seeding_progress_goes_to_the_log_and_its_counts_to_the_console(capsys: pytest.CaptureFixture[str]) -> None:
    for line in ("[seed] 1,336/5,784 records (34/s)", "[seed] 5,784 records written, 12 deleted in 83.4s"):
        seeding_progress(line)
    printed = capsys.readouterr()
    assert printed.out == "[seed] 5,784 records written, 12 deleted in 83.4s\n"
    assert printed.err == "[seed] 1,336/5,784 records (34/s)\n"  # stderr: the log, within output_to_log
