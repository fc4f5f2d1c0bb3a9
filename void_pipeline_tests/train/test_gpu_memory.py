"""The GPU memory check before training: parameters from the model's config, a QLoRA/serving estimate, one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from void_pipeline.lib.train.gpu_memory import (
    KNOWN_PARAMETERS,
    memory_line,
    parameters_from_config,
    parameters_of,
    qlora_need_gib,
    serving_need_gib,
    training_fit,
)

# The bases' config.json values (their model cards) and their published parameter counts
CONFIGS = {
    "meta-llama/Llama-3.1-8B-Instruct": (
        {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32,
         "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False},
        8_030_261_248,
    ),
    "meta-llama/Llama-3.2-3B-Instruct": (
        {"model_type": "llama", "vocab_size": 128256, "hidden_size": 3072, "num_hidden_layers": 28,
         "intermediate_size": 8192, "num_attention_heads": 24, "num_key_value_heads": 8, "tie_word_embeddings": True},
        3_212_749_824,
    ),
    "mistralai/Mistral-7B-Instruct-v0.3": (
        {"model_type": "mistral", "vocab_size": 32768, "hidden_size": 4096, "num_hidden_layers": 32,
         "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128},
        7_248_023_552,
    ),
    "Qwen/Qwen2.5-7B-Instruct": (
        {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "num_hidden_layers": 28,
         "intermediate_size": 18944, "num_attention_heads": 28, "num_key_value_heads": 4, "tie_word_embeddings": False},
        7_615_616_512,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_parameter_count_from_a_config_is_the_published_one(name: str) -> None:
    config, published = CONFIGS[name]
    assert parameters_from_config(config) == published
    assert KNOWN_PARAMETERS[name] == published  # the table used before any copy of the model is on disk


def test_a_local_copy_is_counted_from_its_config_and_a_name_from_the_table(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["meta-llama/Llama-3.2-3B-Instruct"][0]))
    assert parameters_of(str(tmp_path)) == 3_212_749_824
    assert parameters_of("mistralai/Mistral-7B-Instruct-v0.3") == 7_248_023_552
    assert parameters_of("someone/unknown-model") is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))  # not a Llama-like decoder
    assert parameters_of(str(tmp_path)) is None


def test_the_8b_needs_about_11_gib_for_qlora_and_19_for_serving() -> None:
    # 8.03e9 * (0.7 + 0.01 * 16) bytes = 6.43 GiB, + 4 GiB activations + 1 GiB CUDA context
    assert qlora_need_gib(8_030_261_248) == pytest.approx(11.43, abs=0.01)
    # (8.03e9 * 2 bytes = 14.96 GiB, + 2 GiB KV) / 0.9
    assert serving_need_gib(8_030_261_248) == pytest.approx(18.84, abs=0.01)


def test_a_small_gpu_gets_one_line_naming_both_numbers() -> None:
    fits, line = training_fit("meta-llama/Llama-3.1-8B-Instruct", 8192)  # an 8 GiB card
    assert not fits
    assert line == (
        "meta-llama/Llama-3.1-8B-Instruct needs ~11.4 GiB of GPU memory for QLoRA; this GPU has 8.0 GiB: choose a "
        "smaller base (VOID_TRAINER_CONFIG) or a GPU with more memory"
    )
    fits, line = training_fit("meta-llama/Llama-3.2-3B-Instruct", 8192)  # 3.21e9 * 0.86 B = 2.57 GiB + 5
    assert fits and line.endswith("needs ~7.6 GiB of GPU memory for QLoRA; this GPU has 8.0 GiB")
    assert training_fit("meta-llama/Llama-3.1-8B-Instruct", 81559)[0]  # an H100 80GB as nvidia-smi reports it
    assert not memory_line("the 8B", "serving", serving_need_gib(8_030_261_248), 16384)[0]
    assert memory_line("the 8B", "serving", serving_need_gib(8_030_261_248), 24576)[0]


def test_no_gpu_is_the_cuda_line_and_an_unknown_model_is_not_checked() -> None:
    fits, line = training_fit("meta-llama/Llama-3.1-8B-Instruct", None)
    assert not fits and line.startswith("VOID_ACCELERATOR=cuda but nvidia-smi lists no GPU on this host")
    fits, line = training_fit("someone/unknown-model", 4096)
    assert fits and line.startswith("GPU memory not checked: no parameter count for someone/unknown-model")
