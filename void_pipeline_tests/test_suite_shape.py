"""The suite's own shape: test modules and conftest files import shared helpers from ``support``, never from one
another, and nothing in the suite imports in a circle; a test outside the integration tier starts no server."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from void_pipeline_tests.support.tiers import ENVS, integration_process

SUITE = Path(__file__).parent
PACKAGE = SUITE.name


def module_name(path: Path) -> str:
    parts = path.relative_to(SUITE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def suite_imports(path: Path) -> set[str]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> set[str]:
    """The suite's modules ``source`` (a module of ``package``) imports, anywhere in it (functions included),
    relative imports resolved, plugins it loads (``pytest_plugins``) counted as imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import name` may name a module of pkg: count both
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytest_plugins" for t in node.targets):
            names = [c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
        else:
            continue
        found |= {name for name in names if name == PACKAGE or name.startswith(f"{PACKAGE}.")}
    return found


MODULES = {module_name(p): p for p in SUITE.rglob("*.py")}


def forbidden(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last == "conftest" or last.startswith("test_")


def test_no_module_of_the_suite_imports_a_test_module_or_a_conftest() -> None:
    offenders = {
        f"{module} imports {name}"
        for module, path in MODULES.items()
        for name in suite_imports(path)
        if forbidden(name) and name in MODULES
    }
    assert not offenders, sorted(offenders)


def test_the_suite_imports_in_no_circle() -> None:
    graph = {m: {n for n in suite_imports(p) if n in MODULES and n != m} for m, p in MODULES.items()}
    circles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                circles.append([*trail[trail.index(name) :], name])
            elif name not in state:
                visit(name, [*trail, name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # a package's __init__ is imported by every module below it: only circles through real modules count
    circles = [c for c in circles if not any(MODULES[m].name == "__init__.py" for m in c)]
    assert not circles, circles


def test_the_rules_see_the_imports_they_forbid() -> None:
    """The checker finds a test-module import written either way, and a conftest import inside a function."""
    source = (
        "from void_pipeline_tests.ingest.test_export import x\n"
        "from . import test_changes\n"
        "def f():\n    from void_pipeline_tests.conftest import y\n"
        "from void_pipeline_tests.support.world import Agent\n"
    )
    found = {name for name in imports_in(source, f"{PACKAGE}.ingest") if forbidden(name)}
    assert found == {f"{PACKAGE}.ingest.test_export", f"{PACKAGE}.ingest.test_changes", f"{PACKAGE}.conftest"}


@pytest.mark.parametrize(
    "command",
    [
        ["node", "start-plc.mjs"],
        [sys.executable, "-m", "void_pipeline.lib.processes", "--", str(ENVS / "server-0" / "bin" / "python"), "-V"],
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml"],
        ["dagster", "dev"],
        "/usr/lib/postgresql/16/bin/initdb -D data",
        [str(ENVS / "trainer-0" / "bin" / "python"), "-m", "axolotl.cli.train"],
    ],
)
def test_a_server_trainer_or_devnet_is_an_integration_process(command: list[str] | str) -> None:
    assert integration_process(command, shell=isinstance(command, str))


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-c", "pass"],
        ["node", "--version"],
        [sys.executable, "-m", "void_pipeline", "export", "void.test"],
        [str(ENVS / "orchestrator-0" / "bin" / "python"), "-m", "dagster", "definitions", "validate"],
    ],
)
def test_helpers_and_clis_are_not(command: list[str]) -> None:
    assert integration_process(command) is None


def test_outside_the_integration_tier_starting_a_server_fails_naming_it() -> None:
    with pytest.raises(AssertionError, match="without the integration marker started node"):
        subprocess.run(["node", "start-plc.mjs"], check=False)
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0
