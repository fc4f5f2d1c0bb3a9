"""Entry points run in the trainer/server environments (torch, axolotl, vLLM) — never imported by the orchestrator."""
