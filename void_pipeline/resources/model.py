"""The model choice: an axolotl config (plus overlays) that names the base model and its sequence length, and a
local copy of that model. Curate and train both read it, so they can never disagree."""

import dagster as dg
from pydantic import Field

from void_pipeline.lib.model import ChosenModel, choose_model


class ModelChoice(dg.ConfigurableResource):
    """``config`` picks the model: ``axolotl_configs/<config>.yml`` names its ``base_model`` and ``sequence_len``."""

    config: str = Field(default="llama-3.1-8b-instruct", description="axolotl_configs/<name>.yml")
    overlays: list[str] = Field(default_factory=list, description="overlays merged on top, e.g. ['cpu-tiny']")
    local_path: str | None = Field(
        default=None, description="a local copy of the config's model (tokenizer.json, weights); no hub downloads"
    )
    sequence_len: int | None = Field(default=None, description="overrides the config's sequence_len")

    def chosen(self) -> ChosenModel:
        try:
            return choose_model(self.config, self.overlays, self.local_path, self.sequence_len)
        except ValueError as err:
            raise dg.Failure(str(err), allow_retries=False) from err
