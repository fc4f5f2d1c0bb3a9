"""Runs of the code location's asset job made in this process, as the web UI makes them: each run carries the
location's remote job origin (its name as `dg dev` loads it), so the UI can re-execute it and the Timeline shows
it, and its steps run here, their events streamed to the caller as they happen (the demo's console story).

`execute_in_process` makes ephemeral runs without that origin ("Re-execute" then fails on a None check); a run
launched through a run launcher would load the location again in a subprocess per run.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
from dagster._core.execution.api import execute_run_iterator
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.code_location import CodeLocation
from dagster._core.remote_representation.external import RemoteJob
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.hosted_user_process import recon_job_from_origin

from void_pipeline.lib.layout import REPO_ROOT

# Steps run in this process (the in-process executor), as execute_in_process ran them: a subprocess per step would
# import the location again for each. A re-execution from the UI inherits it with the rest of the run config.
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}


@dataclass(frozen=True)
class LocationTarget:
    """Where a code location's definitions are and the name it goes by: `dg dev`'s workspace entry."""

    module: str
    location_name: str
    working_directory: Path

    def origin(self) -> InProcessCodeLocationOrigin:
        target = LoadableTargetOrigin(
            executable_path=sys.executable, module_name=self.module, working_directory=str(self.working_directory)
        )
        return InProcessCodeLocationOrigin(target, location_name=self.location_name)


def project_target(root: Path = REPO_ROOT) -> LocationTarget:
    """The project's code location as `dg dev` (`make ui`) loads it: pyproject's [tool.dg.project] module and name."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    return LocationTarget(project["code_location_target_module"], project["code_location_name"], root)


@dataclass
class LocationRuns:
    """The code location loaded in this process, and the asset job's runs made from it."""

    instance: dg.DagsterInstance
    location: CodeLocation
    job: RemoteJob

    def materialize(
        self,
        assets: Collection[dg.AssetKey],
        run_config: Mapping[str, Any],
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
        on_event: Callable[[dg.DagsterEvent], None] = lambda _event: None,
    ) -> dg.DagsterRun:
        """One run of the asset job over ``assets`` (one partition of them), executed here; ``on_event`` sees each
        of its events as it happens. Returns the run as it ended."""
        code_origin = self.job.get_python_origin()
        job = recon_job_from_origin(code_origin)
        run = self.instance.create_run_for_job(
            job_def=job.get_definition(),
            run_config={**IN_PROCESS, **run_config},
            tags={**(tags or {}), **({PARTITION_NAME_TAG: partition} if partition else {})},
            asset_selection=frozenset(assets),
            remote_job_origin=self.job.get_remote_origin(),
            job_code_origin=code_origin,
        )
        for event in execute_run_iterator(job, run, self.instance):
            on_event(event)
        ended = self.instance.get_run_by_id(run.run_id)
        assert ended is not None  # it was created above
        return ended


@contextmanager
def location_runs(instance: dg.DagsterInstance, target: LocationTarget) -> Iterator[LocationRuns]:
    """The location loaded in this process (its module imported once: a module already imported is reused)."""
    with target.origin().create_location(instance) as location:
        (repository,) = location.get_repositories().values()  # a Definitions module holds one
        yield LocationRuns(instance, location, repository.get_full_job(IMPLICIT_ASSET_JOB_NAME))
