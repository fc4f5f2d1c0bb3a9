"""The one place that says where the pipeline keeps its files."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class DataRootError(ValueError):
    """The data root cannot be a folder; the message names the variable and the path."""


def data_root(check: bool = True) -> Path:
    """Everything the pipeline writes: ``$VOID_PIPELINE_DATA``, default ``<repo>/.data``. A path that is a file (or
    lies under one) is refused here: read as a folder it looks empty ("no bundles", rc 0) to every command.
    ``check=False``: the path as configured, for a caller that reports the problem its own way."""
    configured = os.environ.get("VOID_PIPELINE_DATA")
    root = Path(configured or REPO_ROOT / ".data").resolve()
    nearest = next((p for p in (root, *root.parents) if p.exists()), root)
    if check and not nearest.is_dir():
        where = f"VOID_PIPELINE_DATA={configured}" if configured else f"the data folder {root}"
        what = "is a file" if nearest == root else f"lies under the file {nearest}"
        raise DataRootError(f"{where} {what}, not a folder: point VOID_PIPELINE_DATA at a folder")
    return root


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or data_root() / "dagster_home").resolve()
