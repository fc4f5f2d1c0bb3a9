"""The trainer environment: the tiny model, every candidate config through axolotl's validation, real QLoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from void_pipeline.lib.axolotl_config import CANDIDATES, CPU_OVERLAY, effective_config, write
from void_pipeline.lib.prompt import REPLY_TOOL, REPLY_TOOL_NAME
from void_pipeline_tests.train.conftest import run_trainer


def validate(trainer_bin: Path, config: dict[str, Any], folder: Path) -> dict[str, Any]:
    path = write(config, folder / "effective.yml")
    result = run_trainer(
        trainer_bin, str(trainer_bin / "python"), "-m", "void_pipeline.external.validate_axolotl", str(path)
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stderr[-3000:]
    return dict(json.loads(lines[-1]))


def test_the_tiny_model_renders_tools_and_tool_calls(trainer_bin: Path, tiny_model: Path) -> None:
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tiny_model.iterdir()}
    messages = [
        {"role": "system", "content": "You are void."},
        {"role": "user", "content": "what changes at scale?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": REPLY_TOOL_NAME, "arguments": {"text": "Everything, slowly."}},
                }
            ],
        },
    ]
    script = (
        "import json, sys; from transformers import AutoTokenizer, AutoModelForCausalLM;"
        f"t = AutoTokenizer.from_pretrained({str(tiny_model)!r});"
        f"m = AutoModelForCausalLM.from_pretrained({str(tiny_model)!r});"
        "args = json.loads(sys.argv[1]);"
        "print(json.dumps({'text': t.apply_chat_template(args['m'], tools=args['t'], tokenize=False),"
        " 'params': sum(p.numel() for p in m.parameters()), 'arch': m.config.architectures}))"
    )
    result = run_trainer(
        trainer_bin, str(trainer_bin / "python"), "-c", script, json.dumps({"m": messages, "t": [REPLY_TOOL]})
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["arch"] == ["LlamaForCausalLM"] and out["params"] < 2_000_000
    text = out["text"]
    assert text.startswith("<|begin_of_text|>") and "You are void." in text
    assert f'{{"name": "{REPLY_TOOL_NAME}", "parameters": {{"text": "Everything, slowly."}}}}<|eot_id|>' in text
    assert '"maxLength": 300' in text  # the tool schema is offered to the model


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_every_candidate_config_passes_axolotl_validation(
    candidate: str, trainer_bin: Path, tiny_model: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    config = effective_config(candidate, [CPU_OVERLAY], str(tiny_model), tiny_dataset, tmp_path / "out")
    result = validate(trainer_bin, config, tmp_path)
    assert result == {
        "valid": True,
        "base_model": str(tiny_model),
        "adapter": "qlora",
        "sequence_len": 8192,
        "load_in_4bit": True,
    }


def test_an_unknown_config_key_is_a_clear_error(
    trainer_bin: Path, tiny_model: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    config = effective_config(
        CANDIDATES[0], [CPU_OVERLAY], str(tiny_model), tiny_dataset, tmp_path / "out", extra={"lora_rank": 8}
    )
    assert validate(trainer_bin, config, tmp_path) == {"valid": False, "errors": ["unknown config key: lora_rank"]}


def test_qlora_trains_the_tiny_model_on_cpu(
    trainer_bin: Path, tiny_model: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    config = effective_config(
        CANDIDATES[0],
        [CPU_OVERLAY],
        str(tiny_model),
        tiny_dataset,
        out,
        extra={
            "max_steps": 4,
            "save_steps": 2,
            "eval_strategy": "no",
            "dataset_prepared_path": str(tmp_path / "prepared"),
        },
    )
    config.pop("eval_steps", None)
    path = write(config, tmp_path / "train.yml")
    result = run_trainer(trainer_bin, str(trainer_bin / "axolotl"), "train", str(path), cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert adapter["r"] == 8 and {"q_proj", "v_proj", "down_proj"} <= set(adapter["target_modules"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert "'loss'" in result.stdout + result.stderr
