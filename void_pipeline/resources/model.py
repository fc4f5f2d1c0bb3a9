"""The model choice: an axolotl config (plus overlays) that names the base model and its sequence length, and a
local copy of that model. Curate and train both read it, so they can never disagree."""

import dagster as dg
from pydantic import Field

from void_pipeline.lib import accelerator
from void_pipeline.lib.model import ChosenModel, choose_model
from void_pipeline.lib.train.axolotl_config import accelerator_overlays


class ModelChoice(dg.ConfigurableResource):
    """``config`` picks the model: ``axolotl_configs/<config>.yml`` names its ``base_model`` and ``sequence_len``."""

    config: str = Field(default="llama-3.1-8b-instruct", description="axolotl_configs/<name>.yml")
    overlays: list[str] = Field(default_factory=list, description="overlays merged on top, e.g. ['tiny']")
    accelerator: str = Field(
        default="auto", description="auto | cuda | cpu (VOID_ACCELERATOR): on cpu the cpu overlay comes first"
    )
    local_path: str | None = Field(
        default=None, description="a local copy of the config's model (tokenizer.json, weights); no hub downloads"
    )
    sequence_len: int | None = Field(default=None, description="overrides the config's sequence_len")

    def resolved_accelerator(self) -> str:
        """cuda or cpu: what the training config is made for (``auto``: what nvidia-smi sees here)."""
        if error := accelerator.choice_error(self.accelerator):
            raise dg.Failure(error, allow_retries=False)
        return accelerator.resolve(self.accelerator)

    def chosen(self) -> ChosenModel:
        first = accelerator_overlays(self.resolved_accelerator())
        overlays = [*first, *(o for o in self.overlays if o not in first)]
        try:
            return choose_model(self.config, overlays, self.local_path, self.sequence_len)
        except ValueError as err:
            raise dg.Failure(str(err), allow_retries=False) from err
