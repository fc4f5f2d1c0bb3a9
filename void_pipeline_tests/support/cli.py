"""Commands as an operator runs them, and what their failures must look like."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from void_pipeline.lib.layout import REPO_ROOT


def pipeline_cli(
    *args: str, env: dict[str, str] | None = None, module: str = "void_pipeline"
) -> subprocess.CompletedProcess[str]:
    """``python -m void_pipeline ARGS`` (or another ``module``) as an operator runs it, with nothing from this
    process's environment but the checkout on PYTHONPATH and ``env``, the operator's variables."""
    command = [sys.executable, "-m", module, *args]
    variables = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run(
        command, cwd=REPO_ROOT, env=variables, capture_output=True, text=True, timeout=120, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line a failed command printed (no traceback, no second error line)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def fresh_process_json(script: str, env: dict[str, str], drop: tuple[str, ...] = ("VOID_",), timeout: int = 180) -> Any:
    """``python -c script`` in a fresh process (variables starting with ``drop`` cleared, then ``env`` set): the JSON
    of its last line of output. A failure shows the process's stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, **env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
