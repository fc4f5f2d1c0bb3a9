# The trainer (GPU role): axolotl, torch's CUDA build, bitsandbytes and dagster-pipes, pinned by envs/trainer-cuda.txt
# (the CPU lockfile's pins with the default Linux torch wheels of the same version). With VOID_EXECUTOR=docker or k8s
# the GPU steps (lora_adapter, merged_model, eval_report's model measures, gguf_export) run
# `python -m void_pipeline.external.<step>` in it through dagster-docker's or dagster-k8s's Pipes client
# (defs/external.py, lib/containers.py); benchmarks/gpu_train_bench.sh runs here too.
# Build from the repo root: docker build -f docker/trainer.Dockerfile -t void-pipeline/trainer .
# (compose: docker compose -f docker/compose.yaml build trainer)
# torch's wheels bring their own CUDA 13 libraries (nvidia-*-cu13), so the host's driver must support CUDA 13.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common git \
    && add-apt-repository ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/trainer
ENV PATH=/opt/trainer/bin:$PATH

WORKDIR /opt/void-pipeline
COPY envs/trainer-cuda.txt envs/trainer-cuda.txt
# Every pin, nothing resolved here: torch's default Linux wheels are the CUDA build (no separate index).
RUN pip install --no-deps -r envs/trainer-cuda.txt

COPY void_pipeline void_pipeline
COPY axolotl_configs axolotl_configs
COPY benchmarks benchmarks
ENV PYTHONPATH=/opt/void-pipeline HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    AXOLOTL_DO_NOT_TRACK=1 WANDB_MODE=disabled TRAINER_PYTHON=/opt/trainer/bin/python
CMD ["python", "-m", "void_pipeline.external.train_lora"]
