"""VOID_ACCELERATOR: auto | cuda | cpu, resolved against what nvidia-smi sees; the environments follow it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from void_pipeline.lib import accelerator, environments
from void_pipeline.lib.accelerator import parse_gpu_list, resolve
from void_pipeline.lib.environments import content_key
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.settings import from_environment

# nvidia-smi -L on a one-GPU and a two-GPU host (as the driver prints it)
ONE_H100 = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5f2c1e4a-7d1b-4c2e-9b8a-0a1b2c3d4e5f)\n"
TWO = ONE_H100 + "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222-3333-4444-555555555555)\n"
NO_DEVICE = "No devices were found\n"


def test_a_bad_accelerator_is_a_settings_problem_naming_it_and_the_valid_ones() -> None:
    bad = from_environment({"VOID_ACCELERATOR": "tpu"})
    assert "VOID_ACCELERATOR='tpu' must be auto, cuda or cpu (auto: cuda when nvidia-smi lists a GPU)" in bad.problems
    assert bad.accelerator == "auto"
    assert from_environment({}).accelerator == "auto" and from_environment({}).problems == ()
    forced = from_environment({"VOID_ACCELERATOR": " CPU "})
    assert forced.accelerator == "cpu" and forced.problems == ()


def test_nvidia_smi_lists_are_read_as_gpu_names() -> None:
    assert parse_gpu_list(ONE_H100) == ["NVIDIA H100 80GB HBM3"]
    assert parse_gpu_list(TWO) == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
    assert parse_gpu_list(NO_DEVICE) == [] and parse_gpu_list("") == []


def test_auto_follows_the_gpu_and_an_explicit_choice_wins() -> None:
    assert resolve("auto", lambda: True) == "cuda"
    assert resolve("auto", lambda: False) == "cpu"
    assert resolve("cpu", lambda: True) == "cpu"  # forcing the CPU path on a GPU host
    assert resolve("cuda", lambda: False) == "cuda"  # the steps may run on another host; setup refuses (below)


@pytest.mark.skipif(accelerator.has_gpu(), reason="this host has a GPU")
def test_this_host_without_a_gpu_resolves_auto_to_cpu() -> None:
    assert accelerator.gpu_names() == () and accelerator.gpu_memory_mib() is None
    assert resolve("auto") == "cpu"


def environments_cli(*args: str, accelerator: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """lib/environments.py as make runs it (the machine's python3, standard library only)."""
    env = {
        **os.environ,
        "VOID_ACCELERATOR": accelerator,
        "VOID_PIPELINE_CACHE": str(cache),
        "PYTHONPATH": str(REPO_ROOT),
    }
    return subprocess.run(
        ["python3", "-m", "void_pipeline.lib.environments", *args],
        env=env, capture_output=True, text=True, cwd=REPO_ROOT, check=False,
    )  # fmt: skip


def test_cpu_and_cuda_trainers_live_in_different_folders_named_by_their_pins(tmp_path: Path) -> None:
    cpu = Path(environments_cli("path", "trainer", accelerator="cpu", cache=tmp_path).stdout.strip())
    cuda = Path(environments_cli("path", "trainer", accelerator="cuda", cache=tmp_path).stdout.strip())
    server = Path(environments_cli("path", "server", accelerator="cuda", cache=tmp_path).stdout.strip())
    assert cpu.parent == cuda.parent == server.parent == tmp_path / "envs"
    # the key: the pin file's bytes, python3's version and the machine (as for every environment)
    probe = "import platform; print(platform.python_version(), platform.machine())"
    version, machine = subprocess.run(
        ["python3", "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    for folder, role, pins in ((cpu, "trainer", "trainer.txt"), (cuda, "trainer-cuda", "trainer-cuda.txt"),
                               (server, "server-cuda", "server-cuda.txt")):  # fmt: skip
        key = content_key((REPO_ROOT / "envs" / pins).read_bytes(), version.encode(), machine.encode())
        assert folder.name == f"{role}-{key}"  # the CPU trainer keeps the folder it always had


@pytest.mark.skipif(accelerator.has_gpu(), reason="this host has a GPU")
def test_cuda_without_a_gpu_is_one_line_and_builds_nothing(tmp_path: Path) -> None:
    done = environments_cli("ensure", "trainer", accelerator="cuda", cache=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "setup failed: VOID_ACCELERATOR=cuda but nvidia-smi lists no GPU on this host, so the trainer environment "
        "cannot use CUDA: run it on a GPU host, or set VOID_ACCELERATOR=cpu (or auto) for the CPU path"
    ]
    assert not (tmp_path / "envs").exists() or not any((tmp_path / "envs").iterdir())


def test_a_bad_accelerator_stops_setup_with_one_line(tmp_path: Path) -> None:
    done = environments_cli("path", "server", accelerator="tpu", cache=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (
        "setup failed: VOID_ACCELERATOR='tpu' must be auto, cuda or cpu (auto: cuda when nvidia-smi lists a GPU)"
    )


def test_cuda_environments_decline_the_local_wheel_folder_that_holds_cpu_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    assert str(wheels) in environments.pip_index_args()
    assert str(wheels) not in environments.pip_index_args(find_links=False)
    assert not any(spec.local_wheels for spec in environments.CUDA_ENVIRONMENTS.values())
    cpu_trainer = environments.ENVIRONMENTS["trainer"]
    assert isinstance(cpu_trainer, environments.PythonEnv) and cpu_trainer.local_wheels  # its torch+cpu is there


@pytest.mark.skipif(accelerator.has_gpu(), reason="this host has a GPU")
def test_a_training_step_asked_for_cuda_without_a_gpu_fails_with_the_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    from void_pipeline.resources.trainer import Trainer

    monkeypatch.setenv("VOID_ACCELERATOR", "cuda")
    monkeypatch.setenv("VOID_PIPELINE_CACHE", str(tmp_path))
    with pytest.raises(dg.Failure) as failed:
        Trainer().interpreter()
    assert failed.value.description is not None
    assert failed.value.description.startswith("VOID_ACCELERATOR=cuda but nvidia-smi lists no GPU on this host")
    assert not (tmp_path / "envs").exists() or not any((tmp_path / "envs").iterdir())
    assert Trainer(python="/opt/trainer/bin/python").interpreter() == "/opt/trainer/bin/python"  # an image's: no check
