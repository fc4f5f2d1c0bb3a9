# The trainer (GPU role): axolotl, CUDA torch, bitsandbytes and dagster-pipes, the same pins as the local trainer
# environment (envs/trainer.txt) with torch's CUDA build instead of the CPU one. The lora_adapter and merged_model
# assets run `python -m void_pipeline.external.train_lora` / `merge_lora` in it through a Docker or Kubernetes
# Pipes client (or point Trainer.python at this image's interpreter); benchmarks/gpu_train_bench.sh runs here too.
# Build from the repo root: docker build -f docker/trainer.Dockerfile -t void-pipeline/trainer .
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common git \
    && add-apt-repository ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/trainer
ENV PATH=/opt/trainer/bin:$PATH

WORKDIR /opt/void-pipeline
COPY envs/trainer.txt envs/trainer.txt
# The local pins carry torch's CPU build; here the CUDA 12.8 build of the same version.
RUN sed 's/^torch==\(.*\)+cpu$/torch==\1/' envs/trainer.txt > /tmp/trainer-cuda.txt \
    && pip install --extra-index-url https://download.pytorch.org/whl/cu128 --no-deps -r /tmp/trainer-cuda.txt \
    && (pip install --no-build-isolation flash-attn || echo "flash-attn unavailable: configs fall back to sdpa")

COPY void_pipeline void_pipeline
COPY axolotl_configs axolotl_configs
COPY benchmarks benchmarks
ENV PYTHONPATH=/opt/void-pipeline HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    AXOLOTL_DO_NOT_TRACK=1 WANDB_MODE=disabled TRAINER_PYTHON=/opt/trainer/bin/python
CMD ["python", "-m", "void_pipeline.external.train_lora"]
