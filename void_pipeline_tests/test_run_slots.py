"""Pool slots of dead runs: `python -m void_pipeline free-slots` gives back what a finished or dead run holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun

from void_pipeline.defs import run_slots
from void_pipeline.lib.layout import REPO_ROOT


def add_run(instance: dg.DagsterInstance, run_id: str, status: dg.DagsterRunStatus) -> None:
    instance.add_run(DagsterRun(job_name="train_job", run_id=run_id, status=status))


def free_slots(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "void_pipeline", "free-slots", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.integration
def test_free_slots_gives_back_a_dead_runs_gpu_slot_and_names_what_it_leaves(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "deploy" / "dagster.local.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("gpu", 2)
        add_run(instance, "failed-run", dg.DagsterRunStatus.FAILURE)  # its worker was SIGKILLed mid-step
        add_run(instance, "stuck-run", dg.DagsterRunStatus.STARTED)  # its worker is gone, nobody said so
        for run_id in ("failed-run", "stuck-run"):
            assert storage.claim_concurrency_slot("gpu", run_id, "lora_adapter").is_claimed
        assert storage.get_concurrency_info("gpu").active_run_ids == {"failed-run", "stuck-run"}

    done = free_slots(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "freed gpu slot of run failed-run (FAILURE), step lora_adapter" in done.stdout
    assert "held: gpu slot of run stuck-run (STARTED)" in done.stdout
    assert "free-slots --fail-run stuck-run" in done.stdout
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").active_run_ids == {"stuck-run"}

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:  # the same, in process (the CLI's function)
        report = run_slots.free_slots(instance, fail_run="stuck-run")
        assert [(s.run_id, s.status) for s in report.freed] == [("stuck-run", "FAILURE")] and not report.still_held
        assert not instance.event_log_storage.get_concurrency_info("gpu").active_run_ids
        run = instance.get_run_by_id("stuck-run")
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        assert run_slots.free_slots(instance) == run_slots.SlotsReport([], [])
        with pytest.raises(ValueError, match="no run no-such-run in the instance"):
            run_slots.free_slots(instance, fail_run="no-such-run")


def test_free_slots_without_an_instance_says_what_to_set(tmp_path: Path) -> None:
    done = free_slots(tmp_path / "missing")
    assert done.returncode == 2 and "is not the instance's folder: export it first" in done.stderr
