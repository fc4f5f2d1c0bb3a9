"""An app password comes from the environment and appears nowhere: not in logs, metadata or files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from void_pipeline.defs.ingest.assets import raw_records
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.testworld.corpus import POST
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline_tests.support.world import Agent

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


def export_posts(devnet: DevnetInfo, agent: Agent, root: Path) -> tuple[dg.DagsterInstance, dg.ExecuteInProcessResult]:
    """raw_records[post] with the app password taken from $VOID_APP_PASSWORD, as the code location does."""
    assert devnet.appview_url
    endpoint = AtprotoEndpoint(
        actor=agent.handle,
        plc_url=devnet.plc_url,
        appview_url=devnet.appview_url,
        app_password=dg.EnvVar("VOID_APP_PASSWORD"),
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [raw_records],
        partition_key=POST,
        resources={"endpoint": endpoint, "storage": PipelineStorage(root=str(root))},
        instance=instance,
        raise_on_error=False,
    )
    return instance, result


def test_the_app_password_never_leaves_the_environment(
    devnet: DevnetInfo, agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = devnet.account_password(agent.handle)
    monkeypatch.setenv("VOID_APP_PASSWORD", password)
    instance, result = export_posts(devnet, agent, tmp_path)
    assert result.success
    logs = instance.all_logs(result.run_id)
    assert logs and not any(password in str(entry) for entry in logs)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and password not in str(run.run_config)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not any(password.encode() in p.read_bytes() for p in files)


def test_a_wrong_app_password_fails_clearly_without_echoing_it(
    devnet: DevnetInfo, agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOID_APP_PASSWORD", "wrong-password-4711")
    instance, result = export_posts(devnet, agent, tmp_path)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert f"login to {agent.pds_url} as {agent.did} failed" in message
    assert not any("wrong-password-4711" in str(entry) for entry in instance.all_logs(result.run_id))
