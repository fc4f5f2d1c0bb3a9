#!/usr/bin/env bash
# QLoRA throughput on one GPU (prepared for a single H200, no network): a randomly initialised model with the
# Llama 3.1 8B architecture, 50 steps on packed 4096-token sequences, through axolotl_configs/llama-3.1-8b-instruct.
#
#   TRAINER_PYTHON=/path/to/python benchmarks/gpu_train_bench.sh [OUT_DIR] [extra gpu_train_bench.py flags]
#
# TRAINER_PYTHON: an interpreter with axolotl, CUDA torch and bitsandbytes (the trainer image's; default python3).
# Needs about 40 GB of disk for the random 8B checkpoint (bf16) and its prepared data. Prints one JSON line:
# tokens/s, MFU (4·N FLOPs per token against the H200's dense bf16 peak), peak GPU memory. Goal: >= 8k tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TRAINER_PYTHON:-python3}
OUT=${1:-/tmp/void-gpu-train-bench}
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if ! "$PY" -c "import torch, axolotl, bitsandbytes; assert torch.cuda.is_available()"; then
  echo "gpu_train_bench: needs a CUDA GPU and an interpreter with axolotl + bitsandbytes (TRAINER_PYTHON)" >&2
  exit 2
fi
ATTENTION=flash
"$PY" -c "import flash_attn" 2>/dev/null || { ATTENTION=sdpa; echo "flash-attn not installed: using sdpa" >&2; }
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_train_bench.py --out "$OUT" --attention "$ATTENTION" "$@"
