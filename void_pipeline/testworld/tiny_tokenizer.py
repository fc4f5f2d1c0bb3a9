"""A small BPE tokenizer trained on the corpus itself: the tokenizer half of the tiny test model.

Tests and the demo cannot download a real base model, so they train one of these and use it through exactly the
code path a real model's ``tokenizer.json`` takes (lib/model.py). Deterministic for the same texts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Llama 3's special tokens the chat template and vLLM's llama3_json tool parser use (the parser refuses a tokenizer
# without <|python_tag|>). The first five keep their places: bos and eos are named by index below.
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
]


def train_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 4096) -> Path:
    """Train byte-level BPE on ``texts``; write ``tokenizer.json`` (+ a minimal ``tokenizer_config.json``)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {"bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[4], "model_max_length": 8192}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out_dir
