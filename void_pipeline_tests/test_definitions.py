"""The Dagster code location loads and validates, without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys

from void_pipeline.lib.paths import REPO_ROOT


def test_code_location_loads() -> None:
    from void_pipeline.definitions import defs

    repo = defs.get_repository_def()
    assert repo is not None


def test_dagster_definitions_validate_passes_for_the_workspace(tmp_path: object) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_orchestrator_never_imports_torch() -> None:
    code = "import sys, void_pipeline.definitions, void_pipeline.cli; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr or "torch was imported by the orchestrator"
