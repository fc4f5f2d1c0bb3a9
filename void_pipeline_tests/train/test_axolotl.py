"""The trainer environment: the tiny model, every candidate config through axolotl's validation, real QLoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from void_pipeline.lib.curate.reply_tool import REPLY_TOOL, REPLY_TOOL_NAME
from void_pipeline.lib.train.axolotl_config import CANDIDATES, CPU_OVERLAY, TINY_OVERLAY, effective_config, write
from void_pipeline.testworld.corpus import Corpus, record_text
from void_pipeline_tests.support.trainer import run_trainer

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


def validate(trainer_bin: Path, configs: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """axolotl's own validation of each config, all in one trainer process."""
    paths = [str(write(config, folder / f"effective-{i}.yml")) for i, config in enumerate(configs)]
    result = run_trainer(
        trainer_bin, str(trainer_bin / "python"), "-m", "void_pipeline.external.validate_axolotl", *paths
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(paths), result.stderr[-3000:]
    return [dict(json.loads(line)) for line in lines]


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


def test_every_candidate_config_passes_axolotl_validation_and_an_unknown_key_fails(
    trainer_bin: Path, tiny_model: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    configs = [
        effective_config(c, [CPU_OVERLAY, TINY_OVERLAY], str(tiny_model), tiny_dataset, tmp_path / c)
        for c in CANDIDATES
    ]
    typo = effective_config(
        CANDIDATES[0],
        [CPU_OVERLAY, TINY_OVERLAY],
        str(tiny_model),
        tiny_dataset,
        tmp_path / "typo",
        extra={"lora_rank": 8},
    )
    *candidates, unknown = validate(trainer_bin, [*configs, typo], tmp_path)
    expected = {"valid": True, "base_model": str(tiny_model), "adapter": "qlora", "sequence_len": 8192}
    assert candidates == [{**expected, "load_in_4bit": True}] * len(CANDIDATES)
    assert unknown == {"valid": False, "errors": ["unknown config key: lora_rank"]}


def test_the_demo_base_learns_the_other_authors_and_the_tool_format_but_not_the_agent(
    trainer_bin: Path, corpus: Corpus, corpus_tokenizer: Path, tmp_path: Path
) -> None:
    """`--pretrain` (the demo's instruct stand-in): a short full training whose loss falls, on data that holds
    tool-call conversations and none of the agent's posts."""
    from void_pipeline.testworld.cli import instruct_pretraining

    examples = instruct_pretraining(corpus)
    agent_texts = {record_text(r.value) for r in corpus.records if r.author == corpus.agent.handle}
    assert any("messages" in e for e in examples) and any("text" in e for e in examples)
    assert not {e["text"] for e in examples if "text" in e} & agent_texts
    data = tmp_path / "pretrain.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in examples))
    result = run_trainer(trainer_bin, str(trainer_bin / "python"), "-m", "void_pipeline.testworld.tiny_model",
                         "--tokenizer", str(corpus_tokenizer), "--out", str(tmp_path / "model"),
                         "--pretrain", str(data), "--pretrain-steps", "40")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "model" / "tiny_model.json").read_text())
    assert record["pretrain_steps"] == 40
    assert record["pretrain_loss_last"] < record["pretrain_loss_first"] - 1.0, record
