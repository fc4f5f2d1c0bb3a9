"""Effective axolotl configs: base, then overlays, then the run's own model, data and output folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from void_pipeline.lib.train.axolotl_config import (
    CANDIDATES,
    CPU_OVERLAY,
    TINY_OVERLAY,
    accelerator_overlays,
    effective_config,
    load,
)
from void_pipeline.resources.model import ModelChoice


def test_each_candidate_is_a_qlora_nf4_config_for_its_model() -> None:
    models = {name: load(name)["base_model"] for name in CANDIDATES}
    assert models == {
        "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
        "mistral-7b-v0.3-instruct": "mistralai/Mistral-7B-Instruct-v0.3",
        "llama-3.2-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
        "qwen2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
    }
    for name in CANDIDATES:
        config = load(name)
        assert config["adapter"] == "qlora" and config["load_in_4bit"] is True
        assert config["bnb_config_kwargs"] == {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}
        assert config["lora_target_linear"] is True and config["sample_packing"] is True
        dataset = config["datasets"][0]
        assert dataset["type"] == "chat_template" and dataset["roles_to_train"] == ["assistant"]
        assert dataset["field_tools"] == "tools" and dataset["train_on_eos"] == "turn"
        # flash-attn has no wheel on PyPI: sdpa, which keeps packed samples apart; bf16 wherever the GPU has it
        assert config["attn_implementation"] == "sdpa" and "flash_attention" not in config and config["bf16"] == "auto"


def test_the_cpu_overlay_wins_and_the_run_decides_model_data_and_output(tmp_path: Path) -> None:
    config = effective_config(
        CANDIDATES[0], [CPU_OVERLAY, TINY_OVERLAY], "/models/tiny", tmp_path / "train.jsonl", tmp_path / "out"
    )
    assert (config["bf16"], config["flash_attention"], config["lora_mlp_kernel"]) == (False, False, False)
    assert config["attn_implementation"] == "sdpa" and config["base_model"] == "/models/tiny"
    assert config["datasets"][0]["path"] == str(tmp_path / "train.jsonl")
    assert config["datasets"][0]["field_messages"] == "messages"  # the base's dataset settings are kept
    assert config["output_dir"] == str(tmp_path / "out")


def test_an_unknown_config_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no axolotl config 'gpt-5'.*llama-3\.1-8b-instruct"):
        load("gpt-5")


def test_on_cpu_the_demo_config_is_exactly_what_the_former_cpu_tiny_overlay_gave(tmp_path: Path) -> None:
    """The cpu and tiny overlays together: the keys and values the single cpu-tiny overlay gave before the split
    (written out by hand from the base config and that overlay)."""
    chosen = ModelChoice(overlays=[TINY_OVERLAY], accelerator="cpu").chosen()
    assert chosen.overlays == (CPU_OVERLAY, TINY_OVERLAY)
    train, val, out = tmp_path / "train.jsonl", tmp_path / "val.jsonl", tmp_path / "out"
    config = effective_config(chosen.config, list(chosen.overlays), "/models/tiny", train, out, val_path=val)
    dataset = {
        "ds_type": "json",
        "type": "chat_template",
        "field_messages": "messages",
        "field_tools": "tools",
        "roles_to_train": ["assistant"],
        "train_on_eos": "turn",
    }
    assert config == {
        "base_model": "/models/tiny",
        "model_type": "AutoModelForCausalLM",
        "tokenizer_type": "AutoTokenizer",
        "load_in_4bit": True,
        "bnb_config_kwargs": {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
        "adapter": "qlora",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "lora_target_linear": True,
        "chat_template": "tokenizer_default",
        "datasets": [{**dataset, "path": str(train)}],
        "test_datasets": [{**dataset, "path": str(val), "split": "train"}],
        "sequence_len": 8192,
        "sample_packing": True,
        "pad_to_sequence_len": False,
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "flash_attention": False,
        "attn_implementation": "sdpa",
        "lora_mlp_kernel": False,
        "lora_qkv_kernel": False,
        "lora_o_kernel": False,
        "lora_embedding_kernel": False,
        "gradient_checkpointing": False,
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "max_steps": 10,
        "optimizer": "adamw_torch",
        "lr_scheduler": "cosine",
        "learning_rate": 0.005,
        "warmup_ratio": 0.0,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 5,
        "save_total_limit": 3,
        "val_set_size": 0,
        "eval_steps": 0.5,
        "merge_method": "legacy",
        "output_dir": str(out),
    }


def test_on_cuda_the_base_configs_gpu_settings_run_without_the_cpu_overlay(tmp_path: Path) -> None:
    assert accelerator_overlays("cuda") == () and accelerator_overlays("cpu") == (CPU_OVERLAY,)
    chosen = ModelChoice(overlays=[TINY_OVERLAY], accelerator="cuda").chosen()
    assert chosen.overlays == (TINY_OVERLAY,)
    config = effective_config(chosen.config, list(chosen.overlays), None, tmp_path / "t.jsonl", tmp_path / "out")
    assert (config["bf16"], config["optimizer"], config["attn_implementation"]) == ("auto", "paged_adamw_8bit", "sdpa")
    assert not any(key.endswith("_kernel") for key in config) and "fp16" not in config
    assert config["max_steps"] == 10  # the tiny overlay still applies
    production = ModelChoice(accelerator="cuda").chosen()
    assert production.overlays == () and production.name == "meta-llama/Llama-3.1-8B-Instruct"


def test_the_cpu_overlay_holds_only_what_a_cpu_needs_and_tiny_only_the_short_run() -> None:
    assert set(load(CPU_OVERLAY)) == {
        "load_in_4bit", "bf16", "fp16", "tf32", "flash_attention", "attn_implementation", "lora_mlp_kernel",
        "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel", "optimizer",
    }  # fmt: skip
    assert not set(load(CPU_OVERLAY)) & set(load(TINY_OVERLAY))
