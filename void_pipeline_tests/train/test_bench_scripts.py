"""The training benchmarks' scripts run end to end (small sizes on CPU); their numbers are for the benchmarks."""

from __future__ import annotations

import json
import random
from pathlib import Path

from void_pipeline.lib.paths import REPO_ROOT
from void_pipeline_tests.train.conftest import run_trainer


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
