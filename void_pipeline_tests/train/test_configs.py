"""Effective axolotl configs: base, then overlays, then the run's own model, data and output folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from void_pipeline.lib.train.axolotl_config import CANDIDATES, CPU_OVERLAY, effective_config, load


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
        assert config["flash_attention"] is True and config["bf16"] == "auto"


def test_the_cpu_overlay_wins_and_the_run_decides_model_data_and_output(tmp_path: Path) -> None:
    config = effective_config(CANDIDATES[0], [CPU_OVERLAY], "/models/tiny", tmp_path / "train.jsonl", tmp_path / "out")
    assert (config["bf16"], config["flash_attention"], config["lora_mlp_kernel"]) == (False, False, False)
    assert config["attn_implementation"] == "sdpa" and config["base_model"] == "/models/tiny"
    assert config["datasets"][0]["path"] == str(tmp_path / "train.jsonl")
    assert config["datasets"][0]["field_messages"] == "messages"  # the base's dataset settings are kept
    assert config["output_dir"] == str(tmp_path / "out")


def test_an_unknown_config_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no axolotl config 'gpt-5'.*llama-3\.1-8b-instruct"):
        load("gpt-5")
