"""`make gpu-check` on a machine without a GPU: the CPU-safe parts run, the GPU parts are named, and a host where a
GPU is expected but torch cannot use one fails, one line per part. No GPU is simulated: "expected" comes from
VOID_ACCELERATOR=cuda, or from an nvidia-smi script put first on PATH (the only stand-in, for the driver's list)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from void_pipeline.lib.layout import REPO_ROOT

SCRIPT = str(REPO_ROOT / "benchmarks" / "gpu_check.py")
GPU_PARTS = ["qlora-8b", "vllm-lora-throughput"]
FAKE_SMI = """#!/bin/sh
# what the driver's tool prints on a host with one H200 (query form and header form)
case "$1" in
  --query-gpu=*) echo "NVIDIA H200, 143771 MiB, 570.133.20" ;;
  *) echo "| NVIDIA-SMI 570.133.20   Driver Version: 570.133.20   CUDA Version: 12.8 |" ;;
esac
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOID_")}
    return {**env, **extra}


def test_a_bad_accelerator_value_is_one_line_naming_it(tmp_path: Path) -> None:
    env = clean_env(VOID_ACCELERATOR="tpu")
    done = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["gpu-check: VOID_ACCELERATOR='tpu' is not one of auto, cuda, cpu"]
    assert not (tmp_path / "gpu-check.json").exists()


@pytest.mark.parametrize("expected_by", ["VOID_ACCELERATOR=cuda", "nvidia-smi on PATH"])
def test_a_host_that_should_have_a_gpu_but_cannot_use_one_fails_every_part(expected_by: str, tmp_path: Path) -> None:
    """Run with this interpreter (no torch: the fast tier starts nothing of the trainer environment); a GPU host
    whose torch is missing or a CPU build fails the same way."""
    env = clean_env()
    if expected_by == "nvidia-smi on PATH":
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "nvidia-smi").write_text(FAKE_SMI)
        (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
        env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    else:
        env["VOID_ACCELERATOR"] = "cuda"
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, SCRIPT, "--out", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["environment", *GPU_PARTS], lines
    assert all(line.startswith("gpu-check: ") for line in lines)
    reason = "VOID_ACCELERATOR=cuda" if expected_by.startswith("VOID") else "nvidia-smi lists 1"
    assert f"a GPU is expected ({reason})" in lines[0] and "has no torch" in lines[0]
    results = json.loads((out / "gpu-check.json").read_text())
    assert results["failed"] == ["environment", *GPU_PARTS] and results["gpu_expected"] is True
    assert results["needs_gpu"] == [] and not (out / "train.log").exists()  # nothing was started
    if expected_by == "nvidia-smi on PATH":
        smi = results["nvidia_smi"]
        assert smi["gpus"] == [{"name": "NVIDIA H200", "memory": "143771 MiB", "driver": "570.133.20"}]
        assert smi["cuda_driver"] == "12.8"


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="checks the behaviour of a host without a GPU")
def test_make_gpu_check_on_a_cpu_host_runs_the_cpu_safe_parts_and_names_the_gpu_ones(tmp_path: Path) -> None:
    env = clean_env()
    done = subprocess.run(
        ["make", "-s", "gpu-check", f"GPU_CHECK_ARGS=--out {tmp_path}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"needs a GPU: {', '.join(GPU_PARTS)}" in done.stdout.splitlines()
    results = json.loads((tmp_path / "gpu-check.json").read_text())
    assert results["failed"] == [] and results["needs_gpu"] == GPU_PARTS and results["gpu_visible"] is False
    assert [*results["parts"]] == ["environment", "qlora-smoke-cpu"]
    smoke = results["parts"]["qlora-smoke-cpu"]
    assert smoke["status"] == "passed" and smoke["result"]["device"] == "cpu" and smoke["result"]["steps"] == 2
    assert smoke["result"]["tokens_per_second"] > 0 and smoke["result"]["final_loss"] > 0
    # the report names the trainer environment's torch: its installed distribution, read here by its folder name
    trainer = results["interpreters"]["trainer"]
    site = Path(trainer["path"]).parent.parent / "lib"
    installed = [p.name.removeprefix("torch-").removesuffix(".dist-info") for p in site.glob("*/site-packages/torch-*")]
    assert installed == [trainer["torch"]], (installed, trainer["torch"])
    assert trainer["cuda"] == {"available": False, "torch_cuda": None}
