"""The web UI in a real browser: Debian's chromium driven by Playwright against `dagster dev` (webserver and daemon)
on loopback, over the demo's instance settings and the shared devnet.

The asset graph shows every stage with its assets and their lineage; a partition of raw_records launched from the
UI (the Materialize button and its partition dialog) succeeds; the automation pages list our schedules and sensors.
Screenshots of every page land in $VOID_TEST_ARTIFACTS (default <repo>/.data/test-artifacts/browser).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from playwright.sync_api import Browser, Page, expect

from void_pipeline.lib.ingest.records import COLUMN_DOCS
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.testworld import webui
from void_pipeline.testworld.corpus import POST
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline_tests.support.browser import chromium, recorded
from void_pipeline_tests.support.world import Agent

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

ARTIFACTS = Path(os.environ.get("VOID_TEST_ARTIFACTS") or REPO_ROOT / ".data" / "test-artifacts" / "browser")
STAGES = ("ingest", "curate", "train", "evaluate", "serve")
TIMEOUT_MS = 60_000
RUN_TIMEOUT_S = 240


def location_name() -> str:
    """The code location's name as the UI shows it under `dg dev`: pyproject's [tool.dg.project]."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    return str(project["code_location_name"])


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    from void_pipeline.definitions import defs

    return defs


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser test artifacts: {ARTIFACTS}")
    return ARTIFACTS


@pytest.fixture(scope="module")
def ui_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webui")


@pytest.fixture(scope="module")
def ui_env(devnet: DevnetInfo, agent: Agent, ui_root: Path) -> dict[str, str]:
    """The code location's environment under the UI (and the demo's runs made for it)."""
    assert devnet.appview_url
    # the operator's own settings stay out; automation stays off (the demo's default): no run but ours
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOID_") and k != "DAGSTER_HOME"}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        VOID_ACTOR=agent.handle,
        VOID_PLC_URL=devnet.plc_url,
        VOID_APPVIEW_URL=devnet.appview_url,
        VOID_PIPELINE_DATA=str(ui_root / "data"),
    )
    return env


@pytest.fixture(scope="module")
def ui(ui_env: dict[str, str], ui_root: Path, artifacts: Path) -> Iterator[webui.WebUI]:
    log = ui_root / "dagster-dev.log"
    try:
        with webui.running(webui.prepare_home(ui_root / "home"), ui_env, log) as running:
            yield running
    finally:
        if log.exists():
            shutil.copyfile(log, artifacts / log.name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    # the first visit's "Join the Dagster community" dialog, dismissed as its Skip button does (localStorage)
    context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


# The graph is SVG: every node, group box and label is a <foreignObject>, every edge a <path> with an arrowhead.
GRAPH_SNAPSHOT = """() => {
  const boxes = [...document.querySelectorAll('svg foreignObject')].map(f => ({
    text: f.textContent.trim(), x: +f.getAttribute('x'), y: +f.getAttribute('y'),
    w: +f.getAttribute('width'), h: +f.getAttribute('height')}));
  const edges = [...document.querySelectorAll('svg path[marker-end]')].map(p => {
    const a = p.getPointAtLength(0), b = p.getPointAtLength(p.getTotalLength());
    return [a.x, a.y, b.x, b.y];
  });
  return {boxes, edges};
}"""


def graph_snapshot(page: Page) -> tuple[dict[str, dict[str, float]], list[list[float]]]:
    snapshot: dict[str, Any] = page.evaluate(GRAPH_SNAPSHOT)
    boxes = {b["text"]: b for b in snapshot["boxes"] if b["text"]}
    return boxes, snapshot["edges"]


def settled_graph(
    page: Page, names: set[str], edges_at_least: int = 0
) -> tuple[dict[str, dict[str, float]], list[list[float]]]:
    """The graph once it draws every one of ``names`` (its layout runs in a web worker, after the page loads)."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        boxes, edges = graph_snapshot(page)
        if (names <= set(boxes) and len(edges) >= edges_at_least) or time.monotonic() > deadline:
            return boxes, edges
        page.wait_for_timeout(250)


def connects(edge: list[float], source: dict[str, float], target: dict[str, float], slack: float = 12) -> bool:
    """An edge leaves ``source``'s right side and ends at ``target``'s left side (the horizontal layout)."""
    ax, ay, bx, by = edge
    leaves = abs(ax - (source["x"] + source["w"])) <= slack and source["y"] <= ay <= source["y"] + source["h"]
    arrives = abs(bx - target["x"]) <= slack and target["y"] <= by <= target["y"] + target["h"]
    return leaves and arrives


def inside(box: dict[str, float], region: dict[str, float]) -> bool:
    return (
        region["x"] <= box["x"]
        and box["x"] + box["w"] <= region["x"] + region["w"]
        and region["y"] <= box["y"]
        and box["y"] + box["h"] <= region["y"] + region["h"]
    )


def test_the_asset_graph_shows_every_stage_its_assets_and_their_lineage(
    ui: webui.WebUI, page: Page, artifacts: Path, definitions: dg.Definitions
) -> None:
    graph = definitions.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    lineage = {
        (key.to_user_string(), child.to_user_string())
        for key in graph.get_all_asset_keys()
        for child in graph.get(key).child_keys
    }
    assert set(groups.values()) == set(STAGES)
    assert ("raw_records", "thread_context") in lineage
    page.goto(f"{ui.url}/asset-groups")
    with recorded(page, artifacts, "asset-graph"):
        boxes, _ = settled_graph(page, set(STAGES))
        assert set(STAGES) <= set(boxes), f"stages missing from the graph; it shows {sorted(boxes)}"
        if not set(groups) <= set(boxes):
            page.keyboard.press("Alt+e")  # the graph's "Expand all groups" (⌥E): collapsed groups hide their assets
        boxes, edges = settled_graph(page, set(groups), len(lineage))
        missing = sorted(set(groups) - set(boxes))
        assert not missing, f"assets missing from the graph: {missing}; it shows {sorted(boxes)}"
        for asset, group in groups.items():
            assert inside(boxes[asset], boxes[group]), f"{asset} is not drawn inside its group {group}"
        for source, target in sorted(lineage):
            assert any(connects(e, boxes[source], boxes[target]) for e in edges), f"no edge {source} → {target}"
        assert len(edges) == len(lineage), f"{len(edges)} edges drawn for {len(lineage)} dependencies"


# A run made the demo's way (testworld/location_runs.py, as `make demo` makes each of its runs), in a process of its
# own over the UI's instance and settings: its run id on the last line.
DEMO_RUN = """
import sys
import dagster as dg
from void_pipeline.testworld.location_runs import location_runs, project_target
with dg.DagsterInstance.get() as instance, location_runs(instance, project_target()) as runs:
    run = runs.materialize([dg.AssetKey("raw_records")], {}, partition=sys.argv[1], tags={"void/trigger": "demo"})
print(run.run_id)
"""


def wait_for_end(page: Page) -> None:
    """Until the run's page shows how it ended (a queued run waits for the daemon to start it)."""
    ended = [page.get_by_text(status, exact=True) for status in ("Success", "Failure", "Canceled")]
    ended[0].or_(ended[1]).or_(ended[2]).first.wait_for(timeout=RUN_TIMEOUT_S * 1000)


def run_errors(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.is_failure]


# Before the test that launches a run from the UI (tests run in file order): the Timeline then has only the demo's.
def test_a_demo_run_re_executes_from_its_page_and_shows_on_the_timeline(
    ui: webui.WebUI, ui_env: dict[str, str], page: Page, artifacts: Path
) -> None:
    made = subprocess.run(
        [sys.executable, "-c", DEMO_RUN, POST],
        env={**ui_env, "DAGSTER_HOME": str(ui.home)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    parent_id = made.stdout.split()[-1]
    with dg.DagsterInstance.from_config(str(ui.home)) as instance:
        parent = instance.get_run_by_id(parent_id)
        assert parent is not None and parent.status == dg.DagsterRunStatus.SUCCESS, run_errors(instance, parent_id)
        assert parent.remote_job_origin is not None
        assert parent.remote_job_origin.location_name == location_name()
        assert [r.run_id for r in instance.get_runs()] == [parent_id]  # the Timeline below has only this one

    page.goto(f"{ui.url}/overview/activity/timeline")
    with recorded(page, artifacts, "timeline"):
        # the job's row (the location's asset job) or the empty state, once the runs have loaded
        row = page.get_by_text("Jobless asset materializations").first
        empty = page.get_by_text(re.compile(r"^No runs.* in this time period\.$"))
        row.or_(empty).first.wait_for()
        expect(empty).to_have_count(0)
        expect(row).to_be_visible()

    page.goto(f"{ui.url}/runs/{parent_id}")
    with recorded(page, artifacts, "re-executed-run"):
        wait_for_end(page)
        # "Re-execute all (*)" (or "Re-execute"): a new run of the same job, then its page
        page.get_by_role("button").filter(has_text=re.compile(r"^Re-execute")).first.click()
        page.wait_for_url(lambda url: re.search(r"/runs/[0-9a-f-]{36}", url) is not None and parent_id not in url)
        opened = re.search(r"/runs/([0-9a-f-]{36})", page.url)
        assert opened, page.url
        child_id = opened.group(1)
        wait_for_end(page)
        with dg.DagsterInstance.from_config(str(ui.home)) as instance:
            child = instance.get_run_by_id(child_id)
            assert child is not None and child.parent_run_id == parent_id
            assert child.status == dg.DagsterRunStatus.SUCCESS, f"run {child_id}: {run_errors(instance, child_id)}"
            assert child.tags.get("dagster/partition") == POST and child.tags.get("void/trigger") == "demo"
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()


def test_a_partition_of_raw_records_launched_from_the_ui_succeeds(
    ui: webui.WebUI, page: Page, artifacts: Path, definitions: dg.Definitions
) -> None:
    partitions = definitions.resolve_assets_def("raw_records").partitions_def
    assert partitions is not None
    partition_keys = partitions.get_partition_keys()
    assert POST in partition_keys
    page.goto(f"{ui.url}/assets/raw_records")
    with recorded(page, artifacts, "materialize-dialog"):
        # by its text: the accessible name starts with its icon's label ("materialization Materialize...")
        page.get_by_role("button").filter(has_text=re.compile(r"^Materialize")).first.click()
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize raw_records")
        dialog.get_by_role("button", name="Custom", exact=True).click()
        dialog.locator('[aria-haspopup="dialog"]').click()  # the partition picker (all of them are preselected)
        # its list is a popover of its own, outside the dialog's DOM: a row per partition key, with a checkbox
        for key in partition_keys:
            row = page.get_by_role("menuitem").filter(has=page.get_by_title(key, exact=True))
            box = row.get_by_role("checkbox")  # the input itself is hidden under a drawn box: click the row
            if box.is_checked() != (key == POST):
                row.click()
            expect(box).to_be_checked(checked=key == POST, timeout=TIMEOUT_MS)
        dialog.get_by_text("Launch runs to materialize raw_records").click()  # closes the popover, not the dialog
        dialog.get_by_text("1 partition", exact=True).wait_for()
        launch = dialog.get_by_role("button").filter(has_text=re.compile(r"^Launch 1 run$"))
        launch.wait_for()
    launch.click()
    with recorded(page, artifacts, "run"):
        # the toast says "Launched run <id>"; its View button opens the run's page
        toast = page.get_by_text("Launched run")
        toast.wait_for()
        page.get_by_role("link", name="View", exact=True).click()
        page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
        opened = re.search(r"/runs/([0-9a-f-]{36})", page.url)
        assert opened, page.url
        run_id = opened.group(1)
        # the run is queued until the daemon starts it; its page shows how it ended as a tag
        ended = [page.get_by_text(status, exact=True) for status in ("Success", "Failure", "Canceled")]
        ended[0].or_(ended[1]).or_(ended[2]).first.wait_for(timeout=RUN_TIMEOUT_S * 1000)
        with dg.DagsterInstance.from_config(str(ui.home)) as instance:
            run = instance.get_run_by_id(run_id)
            assert run is not None
            errors = [e.message for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.is_failure]
            assert run.status == dg.DagsterRunStatus.SUCCESS, f"run {run_id}: {run.status}: {errors}"
            assert run.tags.get("dagster/partition") == POST
            assert instance.get_materialized_partitions(dg.AssetKey("raw_records")) == {POST}
        expect(ended[0].first).to_be_visible()

    # what the asset's page shows of it: columns with readable types and what each holds
    page.goto(f"{ui.url}/assets/raw_records")
    with recorded(page, artifacts, "raw_records-overview"):
        expect(page.get_by_text(COLUMN_DOCS["uri"]).first).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.get_by_text("datetime (UTC)").first).to_be_visible(timeout=TIMEOUT_MS)


def test_the_automation_pages_list_our_schedules_and_sensors(
    ui: webui.WebUI, page: Page, artifacts: Path, definitions: dg.Definitions
) -> None:
    location = location_name()
    schedules = [s.name for s in definitions.schedules or []]
    sensors = [s.name for s in definitions.sensors or []]
    assert schedules and sensors, (schedules, sensors)  # else every page below passes by listing nothing
    everything = [("schedules", n) for n in schedules] + [("sensors", n) for n in sensors]
    pages = {  # name: (path, what it lists, what it says when it lists nothing)
        "automation": ("/automation", everything, "No automations"),
        "schedules": (f"/locations/{location}/schedules", [("schedules", n) for n in schedules], "No schedules found"),
        "sensors": (f"/locations/{location}/sensors", [("sensors", n) for n in sensors], "No sensors found"),
    }
    for name, (path, expected, empty) in pages.items():
        page.goto(f"{ui.url}{path}")
        with recorded(page, artifacts, name):
            expect(page).to_have_url(re.compile(re.escape(path) + "$"), timeout=TIMEOUT_MS)  # not redirected
            # loaded: it lists something or says it has nothing (an entry links to its page, .../sensors/<name>)
            entries = page.locator(
                f'a[href*="/locations/{location}/schedules/"], a[href*="/locations/{location}/sensors/"]'
            )
            page.get_by_text(empty, exact=True).or_(entries).first.wait_for()
            expect(page.get_by_text(empty, exact=True)).to_have_count(0)
            for kind, item in expected:
                link = page.locator(f'a[href$="/locations/{location}/{kind}/{item}"]').filter(has_text=item)
                expect(link.first).to_be_visible(timeout=TIMEOUT_MS)
