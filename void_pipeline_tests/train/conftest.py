"""Trainer fixtures: the trainer environment, the tiny model built from the corpus, a small chat dataset."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from void_pipeline.defs.train.assets import OFFLINE
from void_pipeline.lib import environments
from void_pipeline.lib.corpus import POST, Corpus, record_text
from void_pipeline.lib.dataset import format_row
from void_pipeline.lib.paths import REPO_ROOT
from void_pipeline.lib.tiny_tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def trainer_bin() -> Path:
    return environments.ensure("trainer") / "bin"


def run_trainer(
    trainer_bin: Path, *args: str, cwd: Path | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """A command in the trainer environment (its bin first on PATH: axolotl starts `accelerate` from there)."""
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{trainer_bin}:{os.environ['PATH']}"}
    return subprocess.run(
        list(args), cwd=cwd or REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def tiny_model(trainer_bin: Path, corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = train_tokenizer([record_text(r.value) for r in corpus.records], root / "tokenizer", vocab_size=2048)
    result = run_trainer(
        trainer_bin,
        str(trainer_bin / "python"),
        "-m",
        "void_pipeline.external.tiny_model",
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(root / "model"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "model"


@pytest.fixture(scope="session")
def tiny_dataset(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenAI-format rows: a prompt and the agent's real posts as tool calls."""
    posts = [record_text(r.value) for r in corpus.records if r.collection == POST and r.author == corpus.agent.handle]
    rows = [
        format_row(
            {
                "prompt": f"You received a mention. MOST RECENT POST: {posts[i + 1][:120]}",
                "calls": [posts[i]],
                "reasoning": None,
            },
            "openai",
        )
        for i in range(0, 120, 2)
    ]
    path = tmp_path_factory.mktemp("dataset") / "train.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path
