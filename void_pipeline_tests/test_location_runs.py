"""The demo's runs (testworld/location_runs.py) are ordinary runs of the code location's asset job: they carry the
location's origin under the name `dg dev` gives it, and re-execute the way the web UI's "Re-execute" does."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.execution.api import execute_run
from dagster._core.execution.plan.resume_retry import ReexecutionStrategy
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._utils.hosted_user_process import recon_job_from_origin
from dagster_dg_cli.cli.utils import _workspace_entry_for_project
from dagster_dg_core.context import DgContext

from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.testworld.location_runs import LocationTarget, location_runs, project_target


def test_the_demo_loads_the_project_location_as_dg_dev_does() -> None:
    # the workspace entry `dg dev` (make ui) writes for the project: the module, its folder, the location's name
    entry = _workspace_entry_for_project(DgContext.for_project_environment(REPO_ROOT, {}), use_executable_path=False)
    target = project_target()
    assert entry == {
        "python_module": {
            "module_name": target.module,
            "working_directory": str(target.working_directory),
            "location_name": target.location_name,
        }
    }


def test_a_demo_run_carries_the_location_origin_and_re_executes_as_the_ui_does(tmp_path: Path) -> None:
    target = LocationTarget("void_pipeline_tests.support.story_location", "story location", REPO_ROOT)
    raw_records = dg.AssetKey("raw_records")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with location_runs(instance, target) as runs:
            run = runs.materialize([raw_records], {}, partition="post", tags={"void/trigger": "demo"})
        assert run.status == dg.DagsterRunStatus.SUCCESS
        origin = run.remote_job_origin
        assert origin is not None and origin.location_name == "story location"
        assert run.job_code_origin is not None
        assert run.tags["dagster/partition"] == "post" and run.tags["void/trigger"] == "demo"
        assert run.asset_selection == {raw_records}

        # the web UI's re-execution (launch_reexecution_from_parent_run): the job found by the origin's names in
        # a workspace that loads the same target, a child run created from it, then run (here, not by a daemon)
        with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(target.origin())) as workspace:
            context = workspace.create_request_context()
            selector = JobSubsetSelector(
                location_name=origin.location_name,
                repository_name=origin.repository_origin.repository_name,
                job_name=run.job_name,
                asset_selection=run.asset_selection,
                op_selection=None,
            )
            location = context.get_code_location(selector.location_name)
            child = instance.create_reexecuted_run(
                request_context=context,
                parent_run=run,
                code_location=location,
                remote_job=location.get_job(selector),
                strategy=ReexecutionStrategy.ALL_STEPS,
                use_parent_run_tags=True,
            )
        assert child.job_code_origin is not None
        result = execute_run(recon_job_from_origin(child.job_code_origin), child, instance)
        assert result.success
        assert child.parent_run_id == run.run_id and child.tags["dagster/partition"] == "post"
        materialized = instance.fetch_materializations(raw_records, limit=10).records
        assert [m.run_id for m in materialized] == [child.run_id, run.run_id]
