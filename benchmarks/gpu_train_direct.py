"""QLoRA training throughput without axolotl: the pipeline's recipe (axolotl_configs/llama-3.1-8b-instruct.yml:
nf4 with double quantisation, bf16 compute, LoRA r/alpha/dropout on every linear projection, gradient
checkpointing, the paged 8-bit AdamW) trained with transformers + peft + bitsandbytes directly, on the same model
shape (the Llama 3.1 8B architecture, randomly initialised) and the same packed rows (4096 tokens, micro batch 4).

For GPU hosts without axolotl, trl or datasets (gpu_train_bench.sh picks this mode there and installs bitsandbytes
from benchmarks/wheels/, made by prepare_gpu_wheels.sh). Packing here concatenates examples with restarting
position ids; with sdpa attention crosses example boundaries inside a row (flash-attn's varlen path does not), which
changes no FLOP count of the projections that dominate at 4096 tokens: a throughput number, not a training.

    python benchmarks/gpu_train_direct.py --out /tmp/bench                       # H200
    python benchmarks/gpu_train_direct.py --arch tiny --steps 3 ... --out DIR     # CPU smoke run (tests)

Prints one JSON line with the same fields as gpu_train_bench.py, plus "engine": "peft".
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.gpu_train_bench import (  # noqa: E402
    H200_BF16_DENSE_FLOPS,
    LLAMA_31_8B,
    TINY,
    bench_arguments,
    build_data,
    build_model,
)
from void_pipeline.lib.train.axolotl_config import load  # noqa: E402
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer  # noqa: E402


def packed_rows(train_path: Path, tokenizer: Any, sequence_len: int) -> list[tuple[list[int], list[int], list[int]]]:
    """(input_ids, labels, position_ids) rows of exactly ``sequence_len`` tokens: prompts masked out of the loss,
    examples placed greedily, the tail padded with labels -100."""
    rows: list[tuple[list[int], list[int], list[int]]] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def close() -> None:
        missing = sequence_len - len(ids)
        rows.append((ids + [pad] * missing, labels + [-100] * missing, positions + list(range(missing))))

    for line in train_path.read_text().splitlines():
        messages = json.loads(line)["messages"]
        prompt = tokenizer(messages[0]["content"], add_special_tokens=False)["input_ids"]
        answer_text = messages[1]["tool_calls"][0]["function"]["arguments"]["text"]
        answer = tokenizer(answer_text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        example = (prompt + answer)[:sequence_len]
        if len(ids) + len(example) > sequence_len:
            close()
            ids, labels, positions = [], [], []
        ids += example
        labels += ([-100] * len(prompt) + answer)[: len(example)]
        positions += list(range(len(example)))
    if ids:
        close()
    return rows


def main() -> None:
    parser = bench_arguments(__doc__.split("\n")[0], "sdpa")
    parser.add_argument("--quantization", choices=["nf4", "none"], default="nf4")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    recipe = load("llama-3.1-8b-instruct")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_path = build_data(args.out, args.rows, args.sequence_len, random.Random(0))
    tokenizer_dir = train_tokenizer([(args.out / "corpus.txt").read_text()], args.out / "tokenizer", vocab_size=4096)
    model_dir, params = build_model(
        args.out, LLAMA_31_8B if args.arch == "llama-3.1-8b" else TINY, tokenizer_dir, device
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = packed_rows(train_path, tokenizer, args.sequence_len)

    quantization = None
    if args.quantization == "nf4":
        bnb = recipe.get("bnb_config_kwargs") or {}
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=bnb.get("bnb_4bit_quant_type", "nf4"),
            bnb_4bit_use_double_quant=bool(bnb.get("bnb_4bit_use_double_quant", True)),
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=quantization,
        dtype=dtype,
        attn_implementation="flash_attention_2" if args.attention == "flash" else "sdpa",
        device_map={"": 0} if device == "cuda" else None,
    )
    checkpointing = bool(recipe.get("gradient_checkpointing"))
    if quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=int(recipe["lora_r"]),
        lora_alpha=int(recipe["lora_alpha"]),
        lora_dropout=float(recipe["lora_dropout"]),
        target_modules="all-linear" if recipe.get("lora_target_linear") else recipe.get("lora_target_modules"),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if device == "cuda" and recipe.get("optimizer") == "paged_adamw_8bit":
        import bitsandbytes

        optimizer: Any = bitsandbytes.optim.PagedAdamW8bit(trainable, lr=float(recipe["learning_rate"]))
        optimizer_name = "paged_adamw_8bit"
    else:
        optimizer = torch.optim.AdamW(trainable, lr=float(recipe["learning_rate"]))
        optimizer_name = "adamw_torch"
    build_s = time.perf_counter() - started

    model.train()
    steps: list[dict[str, float]] = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        batch = [rows[(step * args.micro_batch_size + i) % len(rows)] for i in range(args.micro_batch_size)]
        input_ids, labels, positions = (torch.tensor([r[k] for r in batch], device=device) for k in range(3))
        tick = time.perf_counter()
        loss = model(input_ids=input_ids, labels=labels, position_ids=positions).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - tick
        steps.append({"loss": float(loss), "seconds": seconds, "tokens": float(input_ids.numel())})
        print(f"step {step + 1}: loss {float(loss):.4f}, {input_ids.numel() / seconds:,.0f} tokens/s", file=sys.stderr)
    steady = steps[len(steps) // 2 :]  # the first steps include kernel selection and allocator warm-up
    tokens_per_s = sum(s["tokens"] for s in steady) / sum(s["seconds"] for s in steady)
    flops = 4 * params * tokens_per_s
    result = {
        "engine": "peft",
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "architecture": args.arch,
        "quantization": args.quantization,
        "attention": args.attention,
        "optimizer": optimizer_name,
        "matmul_parameters": params,
        "steps": len(steps),
        "sequence_len": args.sequence_len,
        "micro_batch_size": args.micro_batch_size,
        "packed_rows": len(rows),
        "tokens_per_second": round(tokens_per_s, 1),
        "mfu": round(flops / H200_BF16_DENSE_FLOPS, 4) if device == "cuda" else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else 0.0,
        "final_loss": steps[-1]["loss"],
        "build_seconds": round(build_s, 1),
        "goal_tokens_per_second": 8000,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
