"""The Dagster code location loads and validates, without importing torch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.testworld.devnet import free_port


def test_code_location_loads_with_the_ingest_assets() -> None:
    from void_pipeline.definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys >= {"raw_records", "thread_context"}
    assert set(defs.resolve_assets_def("raw_records").partitions_def.get_partition_keys()) >= {  # type: ignore[union-attr]
        "app.bsky.feed.post",
        "stream.thought.reasoning",
        "stream.thought.memory",
        "stream.thought.tool.call",
    }


def test_orchestrator_never_imports_torch() -> None:
    code = "import sys, void_pipeline.definitions, void_pipeline.cli; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr or "torch was imported by the orchestrator"


@pytest.mark.integration
def test_the_dagster_webserver_serves_the_asset_graph(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        query = "{ assetNodes { assetKey { path } partitionKeys groupName } }"
        nodes = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=10).json()
                nodes = answer.get("data", {}).get("assetNodes")
                if nodes:
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.5)
        if not nodes:
            tail = server.stderr.read().decode()[-2000:] if server.stderr and server.poll() is not None else ""
            raise AssertionError(f"the webserver served no asset graph: {tail or 'no answer in time'}")
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert set(by_key) >= {"raw_records", "thread_context", "filtered_records", "context_window", "chat_dataset"}
        assert "stream.thought.memory" in by_key["raw_records"]["partitionKeys"]
        assert by_key["thread_context"]["groupName"] == "ingest"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_pyproject_declares_every_third_party_package_the_orchestrator_imports() -> None:
    """Every top-level import of the orchestrator's code (all but external/, which runs in the trainer
    environment) is the standard library, this package, or a distribution pyproject.toml depends on."""
    import ast
    import importlib.metadata
    import re
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["production"]]
    declared = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in requirements}
    distributions = importlib.metadata.packages_distributions()
    missing: dict[str, str] = {}
    for path in (REPO_ROOT / "void_pipeline").rglob("*.py"):
        if "external" in path.parts or path.relative_to(REPO_ROOT).as_posix() == TRAINER_SIDE_TEST_WORLD:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "void_pipeline":
                    continue
                owners = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not owners & declared:
                    missing[top] = str(path.relative_to(REPO_ROOT))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


TRAINER_SIDE_TEST_WORLD = "void_pipeline/testworld/tiny_model.py"  # runs in the trainer environment (torch)


def imported_modules(path: Path) -> set[str]:
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_the_pipeline_never_imports_the_test_world() -> None:
    """The test world drives the pipeline from outside; no pipeline module may depend on it (nor lib on dagster)."""
    offenders: dict[str, list[str]] = {}
    for path in sorted((REPO_ROOT / "void_pipeline").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT)
        if relative.parts[1] == "testworld":
            continue
        modules = imported_modules(path)
        bad = sorted(m for m in modules if m.startswith("void_pipeline.testworld"))
        if relative.parts[1] == "lib":
            bad += sorted(m for m in modules if m.split(".")[0] == "dagster")
        if bad:
            offenders[str(relative)] = bad
    assert not offenders, offenders
    # the check itself sees an import: the test world's CLI imports its devnet
    assert "void_pipeline.testworld.devnet" in imported_modules(REPO_ROOT / "void_pipeline/testworld/cli.py")


def test_every_asset_has_owners_and_a_code_reference_and_raw_records_a_freshness_policy() -> None:
    from void_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == ["team:void-pipeline"], key
        references = node.metadata["dagster/code_references"].code_references
        assert references and all(Path(r.file_path).is_file() for r in references), key
    freshness = graph.get(dg.AssetKey("raw_records")).freshness_policy
    window = getattr(freshness, "fail_window", None)  # a time-window policy (its class is not public)
    assert window is not None and window.to_timedelta().days == 1


def test_the_local_instance_config_loads_with_the_pinned_dagster(tmp_path: Path) -> None:
    import shutil

    shutil.copyfile(REPO_ROOT / "deploy" / "dagster.local.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert "dagster.local.yaml" in (REPO_ROOT / "Makefile").read_text()
