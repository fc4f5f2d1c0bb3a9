"""The one place that says where the pipeline keeps its files."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Everything the pipeline writes: ``$VOID_PIPELINE_DATA``, default ``<repo>/.data``."""
    return Path(os.environ.get("VOID_PIPELINE_DATA", REPO_ROOT / ".data")).resolve()


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", data_root() / "dagster_home")).resolve()
