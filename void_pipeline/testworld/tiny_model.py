"""Build a tiny Llama-architecture model from a trained tokenizer: the stand-in for a real base model.

Runs in the trainer environment (torch, transformers). The result is an ordinary Hugging Face model directory
(config, safetensors weights, tokenizer with a Llama-3-style chat template that renders tools and tool calls), so
axolotl, peft and vLLM take it through exactly the code paths a real 8B model takes.

    python -m void_pipeline.testworld.tiny_model --tokenizer DIR --out DIR [--layers 2 --hidden 64]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# A compact Llama 3.1-style template: system, user, assistant turns with tool calls ({"name", "parameters"}),
# tool results as "ipython" turns, the tool schemas offered in the first user turn as the 3.1 template does.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system = '' %}{%- endif %}"
    "{%- if system or tools %}<|start_header_id|>system<|end_header_id|>\n\n"
    "{%- if tools %}Environment: ipython\n\n{%- endif %}{{ system }}<|eot_id|>{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' and loop.first and tools %}<|start_header_id|>user<|end_header_id|>\n\n"
    "Given the following functions, respond with JSON function calls.\n\n"
    "{%- for tool in tools %}{{ tool | tojson }}\n\n{%- endfor %}{{ message['content'] }}<|eot_id|>"
    "{%- elif message['role'] == 'assistant' and message.get('tool_calls') %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{%- if message.get('content') %}{{ message['content'] }}\n"
    "{%- endif %}{%- for call in message['tool_calls'] %}"
    '{"name": "{{ call["function"]["name"] }}", "parameters": {{ call["function"]["arguments"] | tojson }}}'
    "{%- if not loop.last %}\n{%- endif %}{%- endfor %}<|eot_id|>"
    "{%- elif message['role'] in ['tool', 'ipython'] %}<|start_header_id|>ipython<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>"
    "{%- else %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}"
)


HEAD_DIM = 32


def chat_tokenizer(tokenizer_dir: Path) -> Any:
    """The trained BPE as a Hugging Face tokenizer with Llama 3's special tokens and the chat template above."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_dir / "tokenizer.json"),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=8192,
    )


def build(tokenizer_dir: Path, out: Path, layers: int, hidden: int, seed: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        # Heads of 32 dimensions (the smallest vLLM's CPU attention serves), grouped-query like Llama: 2 per KV head.
        num_attention_heads=max(1, hidden // HEAD_DIM),
        num_key_value_heads=max(1, hidden // HEAD_DIM // 2),
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tiny_model.json").write_text(
        json.dumps(
            {"layers": layers, "hidden": hidden, "seed": seed, "parameters": sum(p.numel() for p in model.parameters())}
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder with tokenizer.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build(args.tokenizer, args.out, args.layers, args.hidden, args.seed))


if __name__ == "__main__":
    main()
