#!/usr/bin/env bash
# The wheels gpu_train_bench.sh installs on an offline GPU host (Python 3.12, x86_64) that lacks them: those in
# benchmarks/gpu_wheels.txt, no dependencies (the host has torch, numpy, packaging), into benchmarks/wheels/
# (git-ignored; carry it with the checkout). Fails when they exceed the budget that can travel with it.
#
#   benchmarks/prepare_gpu_wheels.sh [OUT_DIR] [BUDGET_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/wheels}
BUDGET_MIB=${2:-56}  # 64 MiB travel with the checkout; the checkout itself takes the rest
PY=${PYTHON:-python3}
mkdir -p "$OUT"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 \
  -d "$OUT" -r benchmarks/gpu_wheels.txt
total=$(du -cb "$OUT"/*.whl | tail -1 | cut -f1)
echo "{\"wheels\": $(ls "$OUT"/*.whl | wc -l), \"bytes\": $total, \"budget_bytes\": $((BUDGET_MIB * 1048576))}"
if [ "$total" -gt $((BUDGET_MIB * 1048576)) ]; then
  echo "prepare_gpu_wheels: $total bytes exceed the ${BUDGET_MIB} MiB budget" >&2
  exit 1
fi
