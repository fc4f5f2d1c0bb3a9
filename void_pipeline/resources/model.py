"""The base model the dataset is prepared for: its tokenizer and its sequence length."""

import dagster as dg
from pydantic import Field

from void_pipeline.lib.tokens import TokenCounter


class BaseModel(dg.ConfigurableResource):
    """A base model candidate. ``local_path`` is a local Hugging Face model directory (no hub downloads)."""

    name: str = Field(default="meta-llama/Llama-3.1-8B-Instruct", description="the model's name")
    family: str = Field(default="llama", description="llama | mistral | qwen: picks the token estimate's ratio")
    local_path: str | None = Field(default=None, description="local model directory holding tokenizer.json")
    sequence_len: int = Field(default=8192, description="training sequence length in tokens")

    def token_counter(self) -> TokenCounter:
        return TokenCounter.load(self.local_path, self.family)
