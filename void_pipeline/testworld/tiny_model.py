"""Build a tiny Llama-architecture model from a trained tokenizer: the stand-in for a real base model.

Runs in the trainer environment (torch, transformers). The result is an ordinary Hugging Face model directory
(config, safetensors weights, tokenizer with a Llama-3-style chat template that renders tools and tool calls), so
axolotl, peft and vLLM take it through exactly the code paths a real 8B model takes.

    python -m void_pipeline.testworld.tiny_model --tokenizer DIR --out DIR [--layers 2 --hidden 64]
        [--pretrain FILE --pretrain-steps N]

``--pretrain`` makes it stand in for an *instruct* base model: a short full training on other authors' language and
on chat conversations in which an assistant answers with the reply tool (never the agent's own posts), so the base
knows the format and the corpus's words but not the agent's voice — what a LoRA adapter then has to learn, as with
a real instruct model. FILE holds JSON lines: {"text": ...} or {"messages": [...], "tools": [...]}.
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


def pretrain(model: Any, tokenizer: Any, examples: list[dict[str, Any]], steps: int, seed: int) -> tuple[float, float]:
    """Full training on ``examples`` (texts, or conversations rendered by the chat template): random 256-token
    windows of their concatenation, batches of 16, AdamW. Returns the mean loss of the first and last 10 steps."""
    import torch

    texts = [
        tokenizer.apply_chat_template(e["messages"], tools=e.get("tools"), tokenize=False)
        if "messages" in e
        else str(e["text"]) + tokenizer.eos_token
        for e in examples
    ]
    stream = [i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    window, batch = 256, 16
    if len(stream) <= window + 1:
        raise ValueError("not enough pretraining text for one window")
    generator = torch.Generator().manual_seed(seed)
    data = torch.tensor(stream)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses = []
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - window - 1, (batch,), generator=generator)
        inputs = torch.stack([data[s : s + window] for s in starts])
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return sum(losses[:10]) / len(losses[:10]), sum(losses[-10:]) / len(losses[-10:])


def build(
    tokenizer_dir: Path,
    out: Path,
    layers: int,
    hidden: int,
    seed: int,
    pretraining: list[dict[str, Any]] | None = None,
    pretrain_steps: int = 0,
) -> Path:
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
    trained: dict[str, Any] = {}
    if pretraining and pretrain_steps:
        first, last = pretrain(model, tokenizer, pretraining, pretrain_steps, seed)
        trained = {"pretrain_steps": pretrain_steps, "pretrain_loss_first": first, "pretrain_loss_last": last}
        print(f"pretrained {pretrain_steps} steps: loss {first:.3f} -> {last:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tiny_model.json").write_text(
        json.dumps(
            {
                "layers": layers,
                "hidden": hidden,
                "seed": seed,
                "parameters": sum(p.numel() for p in model.parameters()),
                **trained,
            }
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
    parser.add_argument("--pretrain", type=Path, default=None, help="JSON lines: {text} or {messages, tools}")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    args = parser.parse_args()
    examples = None
    if args.pretrain:
        examples = [json.loads(line) for line in args.pretrain.read_text().splitlines() if line.strip()]
    print(build(args.tokenizer, args.out, args.layers, args.hidden, args.seed, examples, args.pretrain_steps))


if __name__ == "__main__":
    main()
