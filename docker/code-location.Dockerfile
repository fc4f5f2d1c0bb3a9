# The Dagster code location (orchestrator role): dagster, polars, httpx, atproto, mlflow — never torch.
# Build from the repo root: docker build -f docker/code-location.Dockerfile -t void-pipeline/code-location .
FROM python:3.11-slim

WORKDIR /opt/void-pipeline
COPY envs/orchestrator.txt envs/orchestrator.txt
# The pins hold Postgres storage (dagster-postgres), the Kubernetes run launcher/executor and Pipes client
# (dagster-k8s) and the Docker Pipes client (dagster-docker): the GPU steps run in the trainer image through them.
RUN pip install --no-cache-dir --no-deps -r envs/orchestrator.txt

COPY pyproject.toml README.md workspace.yaml ./
COPY docker/workspace.yaml docker/workspace.yaml
# Run from this folder (not pip-installed into site-packages): the code finds the checkout's folders beside
# void_pipeline/ — lora_adapter reads axolotl_configs/ here to make each run's effective config.
COPY void_pipeline void_pipeline
COPY axolotl_configs axolotl_configs

ENV PYTHONPATH=/opt/void-pipeline DAGSTER_HOME=/opt/dagster/home VOID_PIPELINE_DATA=/data
RUN mkdir -p "$DAGSTER_HOME" /data
EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "void_pipeline.definitions"]
