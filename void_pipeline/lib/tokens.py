"""Token counts with the base model's own tokenizer, or a labelled estimate when none is available locally.

The tokenizer is read from a local model directory's ``tokenizer.json`` with the ``tokenizers`` library (no
torch, no hub). Without one, counts are estimated from characters with a per-family ratio, and ``exact`` is
False so every report can say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

# Characters per token measured on English social-media text; an estimate, labelled as such wherever used.
CHARS_PER_TOKEN = {"llama": 3.9, "mistral": 3.6, "qwen": 3.8}
DEFAULT_CHARS_PER_TOKEN = 4.0


@dataclass
class TokenCounter:
    tokenizer: Tokenizer | None
    chars_per_token: float
    source: str

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    @classmethod
    def load(cls, model_dir: str | Path | None, family: str = "llama") -> TokenCounter:
        if model_dir is not None and (Path(model_dir) / "tokenizer.json").exists():
            path = Path(model_dir) / "tokenizer.json"
            return cls(Tokenizer.from_file(str(path)), 0.0, f"tokenizer {path}")
        ratio = CHARS_PER_TOKEN.get(family, DEFAULT_CHARS_PER_TOKEN)
        where = f"no tokenizer.json in {model_dir}" if model_dir else "no tokenizer configured"
        return cls(None, ratio, f"ESTIMATE ({where}): {ratio} characters per token for the {family} family")

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if self.tokenizer is None:
            return [max(1, round(len(t) / self.chars_per_token)) if t else 0 for t in texts]
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
