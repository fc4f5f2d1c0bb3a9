"""Reading in-process Dagster runs: why a step failed; what a folder held before a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step's error message and its user failure data (the run must have failed)."""
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run was expected to fail"
    data = failures[0].step_failure_data
    return "\n".join(filter(None, [data.error.message if data.error else "", str(data.user_failure_data)]))


def value(metadata: Any, key: str) -> Any:
    return metadata[key].value


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
