# The Dagster code location (orchestrator role): dagster, polars, httpx, atproto, mlflow — never torch.
# Build from the repo root: docker build -f docker/code-location.Dockerfile -t void-pipeline/code-location .
FROM python:3.11-slim

WORKDIR /opt/void-pipeline
COPY envs/orchestrator.txt envs/orchestrator.txt
RUN pip install --no-cache-dir --no-deps -r envs/orchestrator.txt

COPY pyproject.toml README.md workspace.yaml ./
COPY docker/workspace.yaml docker/workspace.yaml
COPY void_pipeline void_pipeline
RUN pip install --no-cache-dir --no-deps .

ENV DAGSTER_HOME=/opt/dagster/home VOID_PIPELINE_DATA=/data
RUN mkdir -p "$DAGSTER_HOME" /data
EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "void_pipeline.definitions"]
