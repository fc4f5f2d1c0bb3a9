"""Serve: a passing adapter promoted to a versioned bundle and served (vLLM), smoke-tested through the client; GGUF and Ollama exports."""

import dagster as dg

from void_pipeline.defs.metadata import with_code_references
from void_pipeline.defs.serve.assets import served_model
from void_pipeline.defs.serve.exports import gguf_export

defs = dg.Definitions(assets=with_code_references([served_model, gguf_export]))
