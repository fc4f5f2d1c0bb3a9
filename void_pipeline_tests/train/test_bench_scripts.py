"""The training benchmarks' scripts run end to end (small sizes on CPU); their numbers are for the benchmarks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline_tests.support.trainer import run_trainer


@pytest.mark.integration
def test_multipack_packs_tighter_than_padding(trainer_bin: Path, tmp_path: Path) -> None:
    rng = random.Random(3)
    lengths = [rng.randint(300, 3000) for _ in range(2000)] + [9000]  # one too long: dropped as axolotl does
    (tmp_path / "lengths.json").write_text(json.dumps(lengths))
    script = str(REPO_ROOT / "benchmarks" / "multipack_efficiency.py")
    result = run_trainer(trainer_bin, str(trainer_bin / "python"), script, str(tmp_path / "lengths.json"), "8192", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["examples"] == 2000 and measured["tokens"] == sum(lengths[:-1])
    assert measured["pad_to_sequence_len_efficiency"] < measured["pad_to_longest_efficiency"] < 1
    assert measured["packed_efficiency"] > measured["pad_to_longest_efficiency"]
    assert measured["bins"] * 8192 >= measured["tokens"] * measured["packed_efficiency"]


@pytest.mark.integration
def test_the_gpu_training_benchmark_runs_its_whole_path_on_a_tiny_model(trainer_bin: Path, tmp_path: Path) -> None:
    script = str(REPO_ROOT / "benchmarks" / "gpu_train_bench.py")
    args = ["--arch", "tiny", "--steps", "3", "--sequence-len", "1024", "--micro-batch-size", "1", "--rows", "40"]
    result = run_trainer(
        trainer_bin, str(trainer_bin / "python"), script, "--out", str(tmp_path), *args, "--attention", "sdpa"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["steps"] == 3 and measured["tokens_per_second"] > 0 and measured["device"] == "cpu"
    assert measured["matmul_parameters"] > 0 and measured["final_loss"] > 0


@pytest.mark.integration
def test_the_direct_engine_trains_the_same_qlora_recipe_without_axolotl(trainer_bin: Path, tmp_path: Path) -> None:
    """The offline GPU host's engine (peft + bitsandbytes, no axolotl), its whole path at toy size: nf4 on CPU."""
    script = str(REPO_ROOT / "benchmarks" / "gpu_train_direct.py")
    args = ["--arch", "tiny", "--steps", "4", "--sequence-len", "512", "--micro-batch-size", "2", "--rows", "40"]
    result = run_trainer(trainer_bin, str(trainer_bin / "python"), script, "--out", str(tmp_path), *args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["engine"] == "peft" and measured["quantization"] == "nf4" and measured["steps"] == 4
    assert measured["tokens_per_second"] > 0 and measured["packed_rows"] >= 2 and measured["final_loss"] > 0


@pytest.mark.integration
def test_the_wheels_an_offline_gpu_host_lacks_resolve_and_fit_the_carry_budget(tmp_path: Path) -> None:
    """benchmarks/prepare_gpu_wheels.sh against the package index (reachable here, as the registries are): the
    wheels for Python 3.12 on x86_64 download and fit what travels with the checkout; a tiny budget is refused."""
    import subprocess

    pins = [line for line in (REPO_ROOT / "benchmarks" / "gpu_wheels.txt").read_text().splitlines() if "==" in line]
    trainer_pins = (REPO_ROOT / "envs" / "trainer.txt").read_text().splitlines()
    assert pins and all(pin in trainer_pins for pin in pins)  # the same versions the trainer environment runs
    script = str(REPO_ROOT / "benchmarks" / "prepare_gpu_wheels.sh")
    done = subprocess.run([script, str(tmp_path / "wheels")], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    wheels = sorted((tmp_path / "wheels").glob("*.whl"))
    assert report["wheels"] == len(pins) == len(wheels) and report["bytes"] <= report["budget_bytes"]
    tags = [w.name.removesuffix(".whl").split("-")[-3:] for w in wheels]  # python, abi, platform
    assert all(py in ("py3", "cp312") and platform.endswith("x86_64") for py, _, platform in tags), tags
    too_small = subprocess.run(
        [script, str(tmp_path / "wheels"), "1"], capture_output=True, text=True, timeout=600, check=False
    )
    assert too_small.returncode == 1 and "exceed the 1 MiB budget" in too_small.stderr
