"""vLLM server specs the serve tests start: the session's model with its trained adapter, on the CPU engine settings
evaluation uses on a machine without a GPU (float32, no chunked prefill, ...)."""

from __future__ import annotations

from pathlib import Path

from void_pipeline.lib.serve.vllm_server import ServerSpec
from void_pipeline.resources.server import InferenceServer


def cpu_spec(model: Path, adapter: Path, max_model_len: int) -> ServerSpec:
    """``model`` with ``adapter`` served as "tuned" (rank 8, the adapter's chat template when it has one)."""
    dtype, env, args = InferenceServer(cpu=True, max_model_len=max_model_len).engine()
    template = adapter / "chat_template.jinja"
    return ServerSpec(
        model=str(model),
        adapters={"tuned": str(adapter)},
        lora_rank=8,
        chat_template=str(template) if template.exists() else None,
        dtype=dtype,
        max_model_len=max_model_len,
        env=env,
        extra_args=tuple(args),
    )
