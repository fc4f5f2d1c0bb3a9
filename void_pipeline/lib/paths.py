"""The one place that says where the pipeline keeps its files."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Everything the pipeline writes: ``$VOID_PIPELINE_DATA``, default ``<repo>/.data``."""
    return Path(os.environ.get("VOID_PIPELINE_DATA", REPO_ROOT / ".data")).resolve()


def devnet_dir() -> Path:
    """State of the local AT Protocol world started by ``void-pipeline devnet up`` (wiped at each start)."""
    return data_root() / "devnet"


def seed_dir(devnet_state: Path) -> Path:
    """Ground truth of what was seeded into a devnet; lives and dies with that devnet."""
    return devnet_state / "seed"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", data_root() / "dagster_home")).resolve()
