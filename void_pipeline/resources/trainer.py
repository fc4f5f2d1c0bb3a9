"""Where and how adapters are trained: the trainer environment's Python, last-word config keys, MLflow. The model
and its axolotl config are the model choice (resources/model.py)."""

from typing import Any

import dagster as dg
from pydantic import Field

from void_pipeline.lib import environments


class Trainer(dg.ConfigurableResource):
    """The training recipe. Locally the step runs as a subprocess in the cached trainer environment (or ``python``,
    an image's own interpreter); with VOID_EXECUTOR=docker or k8s in a trainer-image container or pod
    (defs/external.py) — the asset code stays the same."""

    overrides: dict[str, Any] = Field(default_factory=dict, description="last-word config keys (e.g. max_steps)")
    python: str | None = Field(default=None, description="trainer interpreter; default: the cached trainer env")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: SQLite under the data folder (<data>/mlflow)"
    )
    registered_model: str = Field(default="void-lora", description="MLflow registered model the adapters go to")
    ui_url: str | None = Field(
        default=None, description="the MLflow UI that metadata links to; default: the server, or make mlflow-ui's"
    )

    def interpreter(self) -> str:
        """The image's interpreter, or the cached trainer environment of this host's accelerator (CUDA asked of a
        host without a GPU: one line, no retry)."""
        try:
            return self.python or str(environments.ensure("trainer") / "bin" / "python")
        except environments.SetupError as err:
            raise dg.Failure(str(err), allow_retries=False) from err
