"""Does the chosen base fit this GPU? A deliberately simple estimate from the parameter count, checked before the
trainer loads (or downloads) anything, so a too-small GPU is one line naming both numbers, not an out-of-memory
error minutes later.

Parameters: from the local copy's ``config.json`` (embeddings, attention, MLP and norms of a Llama-like decoder:
Llama, Mistral, Qwen 2), else the published count of the known bases in axolotl_configs. The estimate:

- QLoRA: 4-bit weights at 0.7 bytes per parameter (nf4 is 0.5; quantization constants and the embeddings and
  lm_head that bitsandbytes keeps in 16 bits bring it to ~0.7 for these models), the LoRA adapter with its fp32
  gradients and Adam states (~1% of the parameters at rank 32 on every projection, 16 bytes each), plus 4 GiB of
  activations (gradient checkpointing, a micro-batch of packed rows) and 1 GiB of CUDA context.
- Serving (vLLM): bf16 weights (2 bytes per parameter) plus 2 GiB for the KV cache and activations, within the 90%
  of the GPU that vLLM takes by default.

It is a floor, not a promise: a GPU below it cannot train; one above it may still need a smaller micro-batch.
Pure: no torch, no Dagster; the caller asks nvidia-smi (lib/accelerator.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from void_pipeline.lib.accelerator import cuda_missing

GIB = 2**30
QLORA_BYTES_PER_PARAMETER = 0.7
ADAPTER_FRACTION = 0.01
ADAPTER_BYTES_PER_PARAMETER = 16  # fp32 weight, gradient and two Adam moments
ACTIVATIONS_GIB = 4.0
CUDA_CONTEXT_GIB = 1.0
SERVING_BYTES_PER_PARAMETER = 2  # bf16
KV_HEADROOM_GIB = 2.0
VLLM_MEMORY_FRACTION = 0.9  # vLLM's default gpu_memory_utilization

# The published parameter counts (the weights' safetensors totals) of the bases in axolotl_configs.
KNOWN_PARAMETERS = {
    "meta-llama/Llama-3.1-8B-Instruct": 8_030_261_248,
    "mistralai/Mistral-7B-Instruct-v0.3": 7_248_023_552,
    "meta-llama/Llama-3.2-3B-Instruct": 3_212_749_824,
    "Qwen/Qwen2.5-7B-Instruct": 7_615_616_512,
}


def parameters_from_config(config: dict[str, Any]) -> int:
    """The parameter count of a Llama-like decoder from its Hugging Face ``config.json``."""
    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    vocab, intermediate = int(config["vocab_size"]), int(config["intermediate_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim  # q, o; k, v
    if config.get("attention_bias") or config.get("model_type") == "qwen2":  # Qwen 2 has q/k/v biases
        attention += heads * head_dim + 2 * kv_heads * head_dim
    mlp = 3 * hidden * intermediate  # gate, up, down
    norms = (2 * layers + 1) * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp) + norms + embeddings


def parameters_of(weights: str) -> int | None:
    """The parameter count of the model the trainer loads: a local folder's config.json, else a known base's; None
    when neither says."""
    config = Path(weights) / "config.json"
    if config.exists():
        try:
            return parameters_from_config(json.loads(config.read_text()))
        except (KeyError, TypeError, ValueError):
            return None
    return KNOWN_PARAMETERS.get(weights)


def qlora_need_gib(parameters: int) -> float:
    weights = parameters * QLORA_BYTES_PER_PARAMETER
    adapter = parameters * ADAPTER_FRACTION * ADAPTER_BYTES_PER_PARAMETER
    return (weights + adapter) / GIB + ACTIVATIONS_GIB + CUDA_CONTEXT_GIB


def serving_need_gib(parameters: int) -> float:
    return (parameters * SERVING_BYTES_PER_PARAMETER / GIB + KV_HEADROOM_GIB) / VLLM_MEMORY_FRACTION


def memory_line(model: str, what: str, need_gib: float, have_mib: int) -> tuple[bool, str]:
    """(fits, the one line naming both numbers)."""
    have_gib = have_mib / 1024
    line = f"{model} needs ~{need_gib:.1f} GiB of GPU memory for {what}; this GPU has {have_gib:.1f} GiB"
    if have_gib >= need_gib:
        return True, line
    return False, f"{line}: choose a smaller base (VOID_TRAINER_CONFIG) or a GPU with more memory"


def training_fit(weights: str, gpu_mib: int | None) -> tuple[bool, str]:
    """(may train, the line to log or fail with) for QLoRA of ``weights`` (the config's base_model: a local folder
    or a model name) on a GPU of ``gpu_mib`` MiB; None: nvidia-smi saw no GPU."""
    if gpu_mib is None:
        return False, cuda_missing("training")
    parameters = parameters_of(weights)
    if parameters is None:
        return True, f"GPU memory not checked: no parameter count for {weights} (no config.json, not a known base)"
    return memory_line(weights, "QLoRA", qlora_need_gib(parameters), gpu_mib)
