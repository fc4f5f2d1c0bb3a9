"""Every candidate config renders a three-post answer with the chat template it really trains with, and the calls
come back out of the text the way that family's serving parser reads them.

The templates are the copies the trainer environment's packages ship: trl keeps the original Llama 3.1, Llama 3.2
and Qwen 2.5 templates (byte for byte what ``tokenizer_default`` loads from those models); axolotl ships the Mistral
v0.3 template the Mistral config names. No model is downloaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from void_pipeline.lib.curate.dataset import format_row
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL_NAME
from void_pipeline.lib.train.axolotl_config import CANDIDATES, load
from void_pipeline_tests.support.trainer import run_trainer

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

# Where each candidate's template comes from, when the config says tokenizer_default: the model's own template,
# whose copy trl ships for identifying it.
TOKENIZER_DEFAULT_COPIES = {
    "meta-llama/Llama-3.1-8B-Instruct": "trl/chat_templates/llama3_1.jinja",
    "meta-llama/Llama-3.2-3B-Instruct": "trl/chat_templates/llama3_2.jinja",
    "Qwen/Qwen2.5-7B-Instruct": "trl/chat_templates/qwen2_5.jinja",
}
PROMPT = "@ada.test: what changes at scale?"
POSTS = [
    "First post of the answer: the claim.",
    'Second post, with "quotes" and a colon: the evidence.',
    "Third post 😀 the conclusion.",
]

RENDER = """
import json, sys
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast
tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
    bos_token="<s>", eos_token="</s>",
)
out = {}
for name, (path, row) in json.loads(sys.stdin.read()).items():
    try:
        out[name] = {"text": tokenizer.apply_chat_template(
            row["messages"], tools=row["tools"], chat_template=open(path).read(), tokenize=False
        )}
    except Exception as err:
        out[name] = {"error": f"{type(err).__name__}: {err}"}
print(json.dumps(out))
"""


def template_path(trainer_bin: Path, config: dict[str, Any]) -> Path:
    site = next((trainer_bin.parent / "lib").glob("python3*/site-packages"))
    name = config["chat_template"]
    if name == "tokenizer_default":
        return site / TOKENIZER_DEFAULT_COPIES[config["base_model"]]
    return site / "axolotl/utils/chat_templates/templates" / f"{name}.jinja"


def render_all(trainer_bin: Path, rows: dict[str, tuple[Path, dict[str, Any]]]) -> dict[str, dict[str, str]]:
    payload = json.dumps({name: (str(path), row) for name, (path, row) in rows.items()})
    result = run_trainer(trainer_bin, str(trainer_bin / "python"), "-c", RENDER, input_text=payload)
    assert result.returncode == 0, result.stderr[-3000:]
    rendered: dict[str, dict[str, str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return rendered


def calls_as_served(rendered: str, prompt: str) -> list[dict[str, Any]]:
    """The calls in a rendered conversation after its prompt (the tool schemas come before), found as each family's
    vLLM tool parser finds them in an answer: Llama's JSON object with name and parameters, Qwen's <tool_call>
    blocks, Mistral's [TOOL_CALLS] list."""
    family_text = rendered[rendered.index(prompt) + len(prompt) :]
    decoder = json.JSONDecoder()
    calls: list[dict[str, Any]] = []
    for marker in ("[TOOL_CALLS]", "<tool_call>\n", '{"name": '):
        for match in re.finditer(re.escape(marker), family_text):
            start = match.start() if marker.startswith("{") else match.end()
            try:
                value, _ = decoder.raw_decode(family_text[start:].lstrip())
            except json.JSONDecodeError:
                continue
            for call in value if isinstance(value, list) else [value]:
                if isinstance(call, dict) and call.get("name") == REPLY_TOOL_NAME:
                    calls.append(call)
        if calls:
            return calls
    return calls


def test_every_candidate_renders_a_three_post_answer_with_its_own_template(trainer_bin: Path) -> None:
    row = format_row({"prompt": PROMPT, "calls": POSTS, "reasoning": None}, "openai")
    rows = {name: (template_path(trainer_bin, load(name)), row) for name in CANDIDATES}
    assert all(path.exists() for path, _ in rows.values()), {n: str(p) for n, (p, _) in rows.items()}
    rendered = render_all(trainer_bin, rows)
    for name in CANDIDATES:
        assert "text" in rendered[name], f"{name}: {rendered[name].get('error')}"
        text = rendered[name]["text"]
        calls = calls_as_served(text, PROMPT)
        arguments = [call.get("parameters", call.get("arguments")) for call in calls]
        assert arguments == [{"text": post} for post in POSTS], (name, text[-1500:])
        for i, post in enumerate(POSTS):  # the tool's result after each post, in order
            assert f"Posted reply {i + 1} ({len(post)} characters)." in text, name


def test_several_calls_in_one_turn_are_what_the_stock_llama_template_refuses(trainer_bin: Path) -> None:
    """Why the rows hold one call per turn: the shape before this one (one turn, three calls) fails to render."""
    row = format_row({"prompt": "@ada.test: hi", "calls": POSTS, "reasoning": None}, "openai")
    calls = [c for m in row["messages"] if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    one_turn = {"messages": [row["messages"][0], {"role": "assistant", "content": "", "tool_calls": calls}]}
    one_turn["tools"] = row["tools"]
    llama = template_path(trainer_bin, load("llama-3.1-8b-instruct"))
    rendered = render_all(trainer_bin, {"one_turn": (llama, one_turn), "agent_loop": (llama, row)})
    assert "single tool-calls" in rendered["one_turn"].get("error", ""), rendered["one_turn"]
    assert "text" in rendered["agent_loop"]


@pytest.mark.parametrize("reasoning", [None, "ada wants specifics"])
def test_the_tiny_models_template_renders_the_same_turns(
    trainer_bin: Path, reasoning: str | None, tmp_path: Path
) -> None:
    """The CPU stand-in's own template (testworld/tiny_model.py) takes the rows through the same shape."""
    from void_pipeline.testworld.tiny_model import CHAT_TEMPLATE

    row = format_row({"prompt": PROMPT, "calls": POSTS, "reasoning": reasoning}, "openai")
    path = tmp_path / "tiny.jinja"
    path.write_text(CHAT_TEMPLATE)
    rendered = render_all(trainer_bin, {"tiny": (path, row)})["tiny"]
    assert "text" in rendered, rendered
    arguments = [call["parameters"] for call in calls_as_served(rendered["text"], PROMPT)]
    assert arguments == [{"text": post} for post in POSTS]
    if reasoning:  # the first turn's content comes before its call
        assert rendered["text"].index(reasoning) < rendered["text"].index(POSTS[0])
