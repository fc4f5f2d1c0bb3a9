"""The production instance, really run: docker/dagster.yaml in a DAGSTER_HOME, a real PostgreSQL server (started and
stopped here), one partition of raw_records materialized through the Dagster CLI, then read back from Postgres itself
and from the instance. Nothing may land in SQLite, and the Postgres password nowhere in logs or files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.processes import pid_alive
from void_pipeline.testworld.corpus import POST
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.postgres import PostgresNotInstalled, PostgresServer, postgres_bin_dir, throwaway_postgres
from void_pipeline.testworld.seeding import SeedResult
from void_pipeline_tests.support.expected import expected_records
from void_pipeline_tests.support.world import Agent

INSTANCE = REPO_ROOT / "docker" / "dagster.yaml"
RAW_RECORDS = dg.AssetKey("raw_records")
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Materialized:
    server: PostgresServer
    home: Path  # DAGSTER_HOME, holding a copy of docker/dagster.yaml
    data: Path  # VOID_PIPELINE_DATA
    output: str = field(repr=False)  # the CLI's stdout and stderr


def query(server: PostgresServer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(**server.connect_kwargs())
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    finally:
        connection.close()


def only_run_id(server: PostgresServer) -> str:
    runs = query(server, "SELECT run_id FROM runs")
    assert len(runs) == 1, runs
    return str(runs[0][0])


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with throwaway_postgres() as server:
        yield server
    assert not pid_alive(server.pid), "the postmaster outlived its context"
    assert not server.data_dir.exists()


@pytest.fixture(scope="module")
def materialized(
    postgres: PostgresServer, devnet: DevnetInfo, agent: Agent, tmp_path_factory: pytest.TempPathFactory
) -> Materialized:
    assert devnet.appview_url
    root = tmp_path_factory.mktemp("postgres-instance")
    home, data = root / "home", root / "data"
    home.mkdir()
    shutil.copyfile(INSTANCE, home / "dagster.yaml")
    # nothing Dagster- or pipeline-specific from the caller's shell (an app password, another home)
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DAGSTER_", "VOID_")) or key == "VOID_PIPELINE_CACHE"
    }
    env = {
        **inherited,
        "PYTHONPATH": str(REPO_ROOT),
        "DAGSTER_HOME": str(home),
        "VOID_PIPELINE_DATA": str(data),
        "VOID_ACTOR": agent.handle,
        "VOID_PLC_URL": devnet.plc_url,
        "VOID_APPVIEW_URL": devnet.appview_url,
        **postgres.dagster_env(),
    }
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "void_pipeline.definitions"]
    command += ["--select", RAW_RECORDS.to_user_string(), "--partition", POST]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:].replace(postgres.password, "***")
    return Materialized(postgres, home, data, done.stdout + done.stderr)


@pytest.mark.integration
def test_the_run_and_its_materialization_are_rows_in_postgres(materialized: Materialized) -> None:
    server = materialized.server
    run_id = only_run_id(server)
    assert query(server, "SELECT status FROM runs WHERE run_id = %s", run_id) == [("SUCCESS",)]
    tags = dict(query(server, "SELECT key, value FROM run_tags WHERE run_id = %s", run_id))
    assert tags["dagster/partition"] == POST
    materializations = query(
        server,
        "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
        run_id,
        dg.DagsterEventType.ASSET_MATERIALIZATION.value,
    )
    assert materializations == [(RAW_RECORDS.to_string(), POST)]
    last = query(server, "SELECT dagster_event_type FROM event_logs WHERE run_id = %s ORDER BY id DESC LIMIT 1", run_id)
    assert last == [(dg.DagsterEventType.RUN_SUCCESS.value,)]  # stored under its legacy name, PIPELINE_SUCCESS


@pytest.mark.integration
def test_the_instance_from_that_home_reads_the_materialization_back(
    materialized: Materialized, agent: Agent, seeded: SeedResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in materialized.server.dagster_env().items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(materialized.home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_RECORDS, asset_partitions=[POST]), limit=1
        ).records
        assert len(records) == 1 and records[0].run_id == only_run_id(materialized.server)
        materialization = records[0].asset_materialization
        assert materialization is not None and materialization.partition == POST
        rows = materialization.metadata["dagster/row_count"].value
        assert isinstance(rows, int) and rows > 0
        assert rows == len(expected_records(seeded, agent.did, POST))


@pytest.mark.integration
def test_no_sqlite_storage_was_created_under_dagster_home(materialized: Materialized) -> None:
    files = [path for path in materialized.home.rglob("*") if path.is_file()]
    assert files, "the run wrote nothing under DAGSTER_HOME (compute logs belong there)"
    sqlite = [path for path in files if path.suffix in {".db", ".sqlite"} or path.read_bytes()[:16] == SQLITE_HEADER]
    assert not sqlite, f"SQLite storage under DAGSTER_HOME: {sqlite}"
    # and the tables Dagster would otherwise keep there are in Postgres
    tables = {
        row[0] for row in query(materialized.server, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {"runs", "run_tags", "event_logs", "asset_keys", "jobs", "instigators"} <= tables


@pytest.mark.integration
def test_the_postgres_password_appears_in_no_output_event_or_file(materialized: Materialized) -> None:
    password = materialized.server.password
    assert len(password) >= 20  # long and random: a match below could not be a coincidence
    assert password not in materialized.output
    events = query(materialized.server, "SELECT event FROM event_logs")
    assert events and not any(password in text for (text,) in events)
    runs = query(materialized.server, "SELECT run_body FROM runs")
    assert runs and not any(password in body for (body,) in runs)
    files = [path for folder in (materialized.home, materialized.data) for path in folder.rglob("*") if path.is_file()]
    assert files and not any(password.encode() in path.read_bytes() for path in files)


def test_the_server_binaries_are_found_newest_first_or_named_as_missing(tmp_path: Path) -> None:
    for version in ("9.6", "13", "15"):
        bin_dir = tmp_path / "postgresql" / version / "bin"
        bin_dir.mkdir(parents=True)
        for tool in ("initdb", "pg_ctl", "createdb"):
            (bin_dir / tool).touch()
    assert postgres_bin_dir([tmp_path / "postgresql"], path="") == tmp_path / "postgresql" / "15" / "bin"
    with pytest.raises(PostgresNotInstalled, match="apt-get install postgresql"):
        postgres_bin_dir([tmp_path / "nothing"], path=str(tmp_path))
