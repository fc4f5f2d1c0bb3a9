"""An asset, check, sensor or schedule reads as the stage's story: its body (from the first statement, a docstring
included) stays within MAX_BODY_LINES; building metadata and the steps around it belong in lib/ or a helper."""

from __future__ import annotations

import ast
from pathlib import Path

from void_pipeline.lib.layout import REPO_ROOT

MAX_BODY_LINES = 40
DECORATED = ("asset", "check", "sensor", "schedule")  # dg.asset, dg.multi_asset, dg.asset_check, dg.sensor, ...


def long_bodies(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            decorators = [ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list]
            if not any(word in d.rsplit(".", 1)[-1] for d in decorators for word in DECORATED):
                continue
            lines = (node.end_lineno or node.lineno) - node.body[0].lineno + 1
            if lines > MAX_BODY_LINES:
                found.append(f"{path.relative_to(folder.parent)}:{node.lineno} {node.name}: {lines} lines")
    return found


def test_no_asset_check_or_sensor_body_is_over_40_lines() -> None:
    assert long_bodies(REPO_ROOT / "void_pipeline" / "defs") == []


def test_the_measure_sees_a_long_asset(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_BODY_LINES + 1))
    (tmp_path / "assets.py").write_text(
        f"import dagster as dg\n\n\n@dg.asset(group_name='g')\ndef fat() -> None:\n{body}\n"
    )
    (tmp_path / "helpers.py").write_text(f"def helper() -> None:\n{body}\n")  # not an asset: not measured
    assert [line.split(" ", 1)[1] for line in long_bodies(tmp_path)] == [f"fat: {MAX_BODY_LINES + 1} lines"]
