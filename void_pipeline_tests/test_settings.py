"""VOID_* settings: a bad value names its variable; the code location still loads and runs refuse to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from void_pipeline.lib.ingest.records import DEFAULT_COLLECTIONS
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.settings import from_environment, settings


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"VOID_SEQUENCE_LEN": "8k"}, "VOID_SEQUENCE_LEN='8k' is not a whole number"),
        ({"VOID_SEQUENCE_LEN": "0"}, "VOID_SEQUENCE_LEN=0 must be at least 1"),
        ({"VOID_TRAINER_MAX_STEPS": "ten"}, "VOID_TRAINER_MAX_STEPS='ten' is not a whole number"),
        ({"VOID_TRAINER_MAX_STEPS": "-1"}, "VOID_TRAINER_MAX_STEPS=-1 must be at least 1"),
        ({"VOID_COLLECTIONS": "app.bsky.feed.post,../../../../escaped"}, "'../../../../escaped' is not a valid"),
        ({"VOID_COLLECTIONS": ","}, "VOID_COLLECTIONS names no collection"),
        ({"VOID_TRAINER_PYTHON": "/no/such/python"}, "VOID_TRAINER_PYTHON='/no/such/python' is not an executable"),
        ({"VOID_SERVER_PYTHON": "/tmp"}, "VOID_SERVER_PYTHON='/tmp' is not an executable"),
        ({"VOID_AUTOMATION": "yes"}, "VOID_AUTOMATION='yes' must be on or off"),
        ({"VOID_RETRAIN_MIN_NEW_EXAMPLES": "many"}, "VOID_RETRAIN_MIN_NEW_EXAMPLES='many' is not a whole number"),
        ({"VOID_LIVE_INTERVAL_S": "0"}, "VOID_LIVE_INTERVAL_S=0 must be at least 1"),
        ({"VOID_RETRAIN_ON_DELETIONS": "-2"}, "VOID_RETRAIN_ON_DELETIONS=-2 must be at least 1"),
        ({"VOID_EXECUTOR": "k9s"}, "VOID_EXECUTOR='k9s' must be docker, k8s or unset"),
        ({"VOID_DATA_VOLUME": "Pipeline_Data"}, "VOID_DATA_VOLUME='Pipeline_Data' is not a volume or claim name"),
    ],
)
def test_a_bad_value_is_a_problem_naming_its_variable(env: dict[str, str], expected: str) -> None:
    settings = from_environment(env)
    assert any(expected in p for p in settings.problems), settings.problems
    assert all(".." not in c and "/" not in c for c in settings.collections)


def test_good_values_are_used_and_defaults_fill_the_rest() -> None:
    settings = from_environment(
        {"VOID_SEQUENCE_LEN": " 4096 ", "VOID_TRAINER_MAX_STEPS": "10", "VOID_COLLECTIONS": "app.bsky.feed.post"}
    )
    assert settings.problems == () and settings.sequence_len == 4096 and settings.trainer_max_steps == 10
    assert settings.collections == ("app.bsky.feed.post",)
    assert from_environment({}).collections == DEFAULT_COLLECTIONS and from_environment({}).trainer_max_steps is None
    images = from_environment({"VOID_TRAINER_PYTHON": sys.executable, "VOID_SERVER_PYTHON": sys.executable})
    assert images.trainer_python == images.server_python == sys.executable and images.problems == ()
    operating = from_environment({"VOID_AUTOMATION": "on", "VOID_RETRAIN_MIN_NEW_EXAMPLES": "50"})
    assert operating.automation and operating.retrain_min_new_examples == 50 and operating.problems == ()
    assert not from_environment({}).automation and from_environment({}).live_interval_s == 30
    assert (
        from_environment({}).retrain_on_deletions == 1
        and from_environment({"VOID_RETRAIN_ON_DELETIONS": "0"}).retrain_on_deletions == 0
    )


@pytest.mark.integration
def test_the_location_loads_with_bad_values_and_every_run_refuses_naming_them(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT),
        "VOID_PIPELINE_DATA": str(tmp_path / "data"),
        "VOID_SEQUENCE_LEN": "abc",
        "VOID_TRAINER_MAX_STEPS": "-1",
    }
    validate = [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"]
    # the suite's one `dagster definitions validate` (test_definitions loads the location in process)
    loaded = subprocess.run(validate, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr  # the UI would show the location, not an error
    assert "VOID_SEQUENCE_LEN='abc' is not a whole number" in loaded.stderr
    run = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "void_pipeline.definitions"]
    refused = subprocess.run(
        [*run, "--select", "context_window"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "VOID_SEQUENCE_LEN='abc' is not a whole number" in output
    assert "VOID_TRAINER_MAX_STEPS=-1 must be at least 1" in output
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.txt"))  # nothing was written


def test_the_operator_wins_over_a_settings_file_and_each_source_is_named(tmp_path: Path) -> None:
    demo = tmp_path / "demo.env"
    demo.write_text(
        "export VOID_ACTOR=agent.devnet.test\nexport VOID_AGENT=void-demo\nexport VOID_TRAINER_MAX_STEPS=12\n"
        "export VOID_SEQUENCE_LEN=4096\nexport VOID_BASE_MODEL_PATH='/data/models/tiny'\nexport VOID_APP_PASSWORD=pw\n"
    )
    settings = from_environment({"VOID_SETTINGS_FILE": str(demo), "VOID_TRAINER_MAX_STEPS": "0"})
    assert settings.problems == () and settings.trainer_max_steps is None  # 0: no cap, over the file's 12
    assert settings.sequence_len == 4096 and settings.base_model_path == "/data/models/tiny"  # the file fills in
    assert settings.agent == "void-demo"
    sources = {s.name: (s.value, s.origin) for s in settings.sources}
    assert sources["VOID_TRAINER_MAX_STEPS"] == ("0", "environment")
    assert sources["VOID_SEQUENCE_LEN"] == ("4096", f"file {demo}")
    assert sources["VOID_APP_PASSWORD"] == ("(set)", f"file {demo}")  # a secret's value is never shown

    # Another agent selected: none of the demo's settings apply (no tiny model, no 12-step cap for the real agent)
    real = from_environment({"VOID_SETTINGS_FILE": str(demo), "VOID_ACTOR": "void.comind.network"})
    assert real.agent == "void" and real.trainer_max_steps is None and real.base_model_path is None
    assert real.sequence_len is None and any("is not applied: VOID_ACTOR=void.comind.network" in n for n in real.notes)
    assert {s.name for s in real.sources} == {"VOID_ACTOR"}

    missing = from_environment({"VOID_SETTINGS_FILE": str(tmp_path / "nope.env")})
    assert any("VOID_SETTINGS_FILE=" in p and "cannot be read" in p for p in missing.problems)


@pytest.mark.integration
def test_make_ui_shows_where_settings_come_from_and_refuses_a_busy_port(tmp_path: Path) -> None:
    """`make ui` after a demo: the operator's variable wins over the demo's, the banner says so, and a port that
    is taken fails at once, naming it (before, dg dev's daemon went on running beside a failed webserver)."""
    import socket

    (tmp_path / "demo.env").write_text("export VOID_AGENT=void-demo\nexport VOID_TRAINER_MAX_STEPS=12\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, "VOID_PIPELINE_DATA": str(tmp_path), "VOID_TRAINER_MAX_STEPS": "0",
               "DAGSTER_HOME": str(tmp_path / "home")}  # fmt: skip
        env.pop("VOID_SETTINGS_FILE", None)
        done = subprocess.run(["make", "-s", "ui", f"UI_PORT={port}"], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr and f"UI_PORT={port + 1} make ui" in done.stderr
    assert "VOID_TRAINER_MAX_STEPS=0  (environment)" in done.stdout, done.stdout
    assert f"VOID_AGENT=void-demo  (file {tmp_path / 'ui-settings.env'})" in done.stdout, done.stdout
    assert "Dagster UI:" not in done.stdout  # dg dev never started


def test_importing_the_code_location_parses_settings_once() -> None:
    """Every module asks settings(); before, definitions.py and four defs modules each parsed the environment."""
    code = (
        "import void_pipeline.lib.settings as s\n"
        "calls = []\n"
        "parse = s.from_environment\n"
        "s.from_environment = lambda env=None: calls.append(env) or parse(env)\n"
        "from void_pipeline.definitions import defs\n"
        "defs.get_repository_def().get_all_jobs()\n"
        "print(len(calls))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOID_")} | {"PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1", done.stdout


def test_settings_are_parsed_again_only_when_a_variable_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOID_AGENT", "first")
    assert settings() is settings() and settings().agent == "first"
    monkeypatch.setenv("VOID_AGENT", "second")
    assert settings().agent == "second"


def test_the_agent_pds_and_the_reply_pds_are_two_settings() -> None:
    """VOID_PDS_URL is the agent's PDS for ingest only; `reply --post` publishes through VOID_REPLY_PDS_URL."""
    from void_pipeline.definitions import resources_from_environment
    from void_pipeline.resources.atproto import AtprotoEndpoint

    agent_only = from_environment({"VOID_PDS_URL": "http://127.0.0.1:2583"})
    assert agent_only.pds_url == "http://127.0.0.1:2583" and agent_only.reply_pds_url == "https://bsky.social"
    both = from_environment({"VOID_PDS_URL": "http://127.0.0.1:2583", "VOID_REPLY_PDS_URL": "http://127.0.0.1:2584"})
    assert both.pds_url == "http://127.0.0.1:2583" and both.reply_pds_url == "http://127.0.0.1:2584"
    endpoint = resources_from_environment(both)["endpoint"]
    assert isinstance(endpoint, AtprotoEndpoint) and endpoint.pds_url == "http://127.0.0.1:2583"
    assert from_environment({"VOID_REPLY_PDS_URL": "http://127.0.0.1:2584"}).pds_url is None
    helped = subprocess.run(
        [sys.executable, "-m", "void_pipeline", "reply", "--help"],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
    )  # fmt: skip
    assert "$VOID_REPLY_PDS_URL" in " ".join(helped.stdout.split()), helped.stdout


def test_mlflow_s_own_variable_is_the_fallback_and_secrets_never_print() -> None:
    assert from_environment({"MLFLOW_TRACKING_URI": "http://mlflow:5000"}).mlflow_tracking_uri == "http://mlflow:5000"
    both = from_environment(
        {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "VOID_MLFLOW_TRACKING_URI": "http://ours:5000"}
    )
    assert both.mlflow_tracking_uri == "http://ours:5000"
    secret = from_environment({"VOID_SERVE_API_KEY": "key-4711", "VOID_APP_PASSWORD": "pw-4711"})
    assert secret.serve_api_key == "key-4711" and secret.app_password == "pw-4711"
    assert "4711" not in repr(secret) and "4711" not in repr(secret.sources)
