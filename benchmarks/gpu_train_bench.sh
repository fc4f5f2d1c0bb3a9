#!/usr/bin/env bash
# QLoRA throughput on one GPU (prepared for a single H200, no network): a randomly initialised model with the
# Llama 3.1 8B architecture, 50 steps on packed 4096-token sequences, the recipe of
# axolotl_configs/llama-3.1-8b-instruct.yml.
#
#   TRAINER_PYTHON=/path/to/python benchmarks/gpu_train_bench.sh [OUT_DIR] [extra flags]
#
# TRAINER_PYTHON: the interpreter to train with (default python3). Two engines, picked by what it has:
#   axolotl   torch + axolotl + bitsandbytes (the trainer image): gpu_train_bench.py, through the pipeline's config
#   peft      torch + transformers + peft only (an offline GPU host): gpu_train_direct.py, the same recipe with
#             peft + bitsandbytes directly; bitsandbytes is installed from benchmarks/wheels/ when missing
#             (make the folder on a machine with PyPI: benchmarks/prepare_gpu_wheels.sh; it travels with the checkout)
# ENGINE=axolotl|peft forces one. Needs about 40 GB of disk for the random 8B checkpoint (bf16). Prints one JSON
# line: tokens/s, MFU (4·N FLOPs per token against the H200's dense bf16 peak), peak GPU memory. Goal: >= 8k tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TRAINER_PYTHON:-python3}
OUT=${1:-/tmp/void-gpu-train-bench}
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# GPU_TRAIN_BENCH_CPU=1: let it run on the CPU (gpu_check.py's smoke run of this same path, at toy size)
if [ "${GPU_TRAIN_BENCH_CPU:-0}" != 1 ] && ! "$PY" -c "import torch; assert torch.cuda.is_available()"; then
  echo "gpu_train_bench: needs a CUDA GPU visible to $PY (TRAINER_PYTHON)" >&2
  exit 2
fi
ENGINE=${ENGINE:-}
if [ -z "$ENGINE" ]; then
  if "$PY" -c "import axolotl, bitsandbytes" 2>/dev/null; then ENGINE=axolotl; else ENGINE=peft; fi
fi
ATTENTION=flash
"$PY" -c "import flash_attn" 2>/dev/null || { ATTENTION=sdpa; echo "flash-attn not installed: using sdpa" >&2; }
export PYTHONUNBUFFERED=1
if [ "$ENGINE" = axolotl ]; then
  exec "$PY" benchmarks/gpu_train_bench.py --out "$OUT" --attention "$ATTENTION" "$@"
fi
if ! "$PY" -c "import bitsandbytes" 2>/dev/null; then
  shopt -s nullglob
  wheels=(benchmarks/wheels/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "gpu_train_bench: $PY has no bitsandbytes and benchmarks/wheels/ is empty (benchmarks/prepare_gpu_wheels.sh)" >&2
    exit 2
  fi
  SITE="$OUT/site-packages"
  mkdir -p "$SITE"
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "${wheels[@]}"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import peft, transformers" || { echo "gpu_train_bench: the peft engine needs peft and transformers" >&2; exit 2; }
exec "$PY" benchmarks/gpu_train_direct.py --out "$OUT" --attention "$ATTENTION" "$@"
