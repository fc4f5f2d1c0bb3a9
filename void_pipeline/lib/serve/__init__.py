"""Serving: the vLLM server lifecycle (evaluate and serve start it the same way)."""
