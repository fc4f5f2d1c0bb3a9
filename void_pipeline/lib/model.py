"""The one model choice: an axolotl config names the base model and its sequence length, and every stage takes
both from it — curate counts tokens with that model's tokenizer against that budget, train trains that model.

Token counts use the base model's own tokenizer, or a labelled estimate when none is available locally. The tokenizer is read from a local model directory's ``tokenizer.json`` with the ``tokenizers`` library (no
torch, no hub). Without one, counts are estimated from characters with a per-family ratio, and ``exact`` is
False so every report can say so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from void_pipeline.lib.train.axolotl_config import CONFIG_DIR, load

# Characters per token measured on English social-media text; an estimate, labelled as such wherever used.
CHARS_PER_TOKEN = {"llama": 3.9, "mistral": 3.6, "qwen": 3.8}
DEFAULT_CHARS_PER_TOKEN = 4.0


class TokenizerError(ValueError):
    """A tokenizer.json the tokenizers library cannot read; the message names the file."""


def load_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the library raises a bare Exception that names no file
        raise TokenizerError(
            f"{path} is not a tokenizer the tokenizers library can read ({err}): copy the model's tokenizer.json again"
        ) from err


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
            return cls(load_tokenizer(path), 0.0, f"tokenizer {path}")
        ratio = CHARS_PER_TOKEN.get(family, DEFAULT_CHARS_PER_TOKEN)
        where = f"no tokenizer.json in {model_dir}" if model_dir else "no tokenizer configured"
        return cls(None, ratio, f"ESTIMATE ({where}): {ratio} characters per token for the {family} family")

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if self.tokenizer is None:
            return [max(1, round(len(t) / self.chars_per_token)) if t else 0 for t in texts]
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]


FAMILIES = {"llama": "llama", "mistral": "mistral", "mixtral": "mistral", "qwen": "qwen"}


def family_of(name: str, local_path: str | None = None) -> str:
    """llama | mistral | qwen | other: the local model's ``config.json`` ``model_type`` when there is one (a local
    copy may have any folder name), else the model's name."""
    hints = [name.lower()]
    if local_path and (Path(local_path) / "config.json").exists():
        with contextlib.suppress(OSError, ValueError):
            hints.insert(0, str(json.loads((Path(local_path) / "config.json").read_text()).get("model_type", "")))
    for hint in hints:
        for key, family in FAMILIES.items():
            if key in hint:
                return family
    return "other"


def vocabulary_fingerprint(model_dir: str | Path | None) -> str | None:
    """A hash of the tokenizer's vocabulary (token → id), or None without a local ``tokenizer.json``. Stable across
    re-serialisations of the same tokenizer (a model's save_pretrained copy hashes as its source)."""
    path = Path(model_dir) / "tokenizer.json" if model_dir else None
    if path is None or not path.exists():
        return None
    vocab = load_tokenizer(path).get_vocab(with_added_tokens=True)
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ChosenModel:
    """What the axolotl config (plus overlays and the operator's overrides) says the model is."""

    config: str  # axolotl_configs/<config>.yml
    overlays: tuple[str, ...]
    name: str  # the config's base_model: the model's name
    local_path: str | None  # a local copy of that model (no hub downloads); None: load by name
    sequence_len: int
    family: str

    @property
    def weights(self) -> str:
        """What the trainer loads: the local copy when there is one."""
        return self.local_path or self.name

    def token_counter(self) -> TokenCounter:
        return TokenCounter.load(self.local_path, self.family)

    def identity(self) -> dict[str, object]:
        """Recorded with a dataset; training compares it with its own (``mismatch``)."""
        return {
            "model_config": self.config,
            "base_model": self.name,
            "model_family": self.family,
            "sequence_len": self.sequence_len,
            "vocabulary": vocabulary_fingerprint(self.local_path),
        }


def choose_model(
    config: str,
    overlays: Sequence[str] = (),
    local_path: str | None = None,
    sequence_len: int | None = None,
    folder: Path = CONFIG_DIR,
) -> ChosenModel:
    """The model the config names; ``sequence_len`` overrides the config's (VOID_SEQUENCE_LEN). Raises ValueError
    for an unknown config or one without ``base_model``/``sequence_len``."""
    merged = load(config, folder)
    for overlay in overlays:
        merged.update(load(overlay, folder))
    name, length = merged.get("base_model"), sequence_len or merged.get("sequence_len")
    if not name or not length:
        raise ValueError(f"axolotl config {config!r} (+{list(overlays)}) names no base_model or no sequence_len")
    named, family = family_of(str(name)), family_of(str(name), local_path)
    if named != "other" and family != named:  # the local copy's config.json says what it really is
        raise ValueError(
            f"the local model {local_path} holds a {family} model, not the {named} model axolotl config {config!r} "
            f"names ({name}): point VOID_BASE_MODEL_PATH at a copy of {name}, or choose a {family} config"
        )
    return ChosenModel(config, tuple(overlays), str(name), local_path, int(length), family)


def mismatch(built: dict[str, object], chosen: ChosenModel) -> list[str]:
    """Why a dataset built for ``built`` (its recorded identity) cannot train ``chosen``: one line per difference."""
    now = chosen.identity()
    errors = []
    if built.get("sequence_len") and int(str(built["sequence_len"])) != chosen.sequence_len:
        errors.append(
            f"the dataset was built for sequence_len {built['sequence_len']} and this training uses "
            f"{chosen.sequence_len}: rebuild chat_dataset (it takes sequence_len from the same model choice)"
        )
    for key, what in (("model_family", "model family"), ("base_model", "base model")):
        if built.get(key) and built[key] != now[key]:
            errors.append(
                f"the dataset was built for {what} {built[key]} and this training uses {now[key]}: "
                "rebuild chat_dataset with the same model choice (VOID_TRAINER_CONFIG)"
            )
    if built.get("vocabulary") and now["vocabulary"] and built["vocabulary"] != now["vocabulary"]:
        errors.append(
            "the dataset's token counts come from another tokenizer than the training model's: rebuild chat_dataset"
        )
    return errors
