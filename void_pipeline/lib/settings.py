"""The code location's settings from ``VOID_*`` environment variables, parsed once and checked.

A bad value never stops the code location from loading: it is reported as a problem naming the variable, the
resources keep the default, and every run refuses to start until it is fixed (``PipelineStorage`` raises the
problems when a step sets it up). The CLI prints the same messages.

Layers: ``$VOID_SETTINGS_FILE`` may name a file of ``export VOID_X=...`` lines (``make ui`` passes the demo's and a
running devnet's) that fills in what the environment leaves unset: a variable the operator set always wins. The
file speaks for one agent: when the environment selects another (``VOID_ACTOR`` or ``VOID_AGENT`` differ from the
file's), none of it applies. ``Settings.sources`` says where each set variable came from.

Every module asks ``settings()``: parsed once per process (again only if the environment's ``VOID_*`` variables
change, as tests do). ``from_environment(env)`` is the parser itself, pure, for tests.

MLflow: ``VOID_MLFLOW_TRACKING_URI`` names the tracking server; when it is unset, the MLflow client's own
``MLFLOW_TRACKING_URI`` is used; when both are unset, a SQLite store under the data folder.

Not here: the setup's ``VOID_PIPELINE_CACHE``, ``VOID_PIPELINE_NODE`` and ``VOID_PIPELINE_NO_UV`` (read by
lib/environments.py, standard library only, before any environment exists) and ``VOID_METRICS_PATH`` (how the
trainer process tells its own callback where to write, not a setting).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from void_pipeline.lib.accelerator import ACCELERATOR_ENV, choice_error
from void_pipeline.lib.ingest.collections import DEFAULT_COLLECTIONS, collection_error
from void_pipeline.lib.layout import agent_name_error, default_agent_name
from void_pipeline.lib.model import choose_model

DEFAULT_PLC_URL = "https://plc.directory"
DEFAULT_APPVIEW_URL = "https://public.api.bsky.app"
DEFAULT_REPLY_PDS_URL = "https://bsky.social"  # where `reply --post` publishes, unless VOID_REPLY_PDS_URL says
APP_PASSWORD_ENV = "VOID_APP_PASSWORD"  # Dagster reads it at run time (EnvVar): the resource never holds the value
SERVE_API_KEY_ENV = "VOID_SERVE_API_KEY"  # the endpoint's key, for the server and for every client
JUDGE_API_KEY_ENV = "VOID_JUDGE_API_KEY"  # the evaluation judge's key (another variable can be named in run config)
SERVE_URL_ENV = "VOID_SERVE_URL"  # a server this machine did not start (another container): its base URL
EXECUTORS = ("docker", "k8s")  # VOID_EXECUTOR; unset: Dagster's default executor
# A Docker volume and a Kubernetes claim both accept this (a DNS-1123 name)
VOLUME_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
MLFLOW_CLIENT_URI_ENV = "MLFLOW_TRACKING_URI"  # the MLflow client's own name: the fallback for ours


@dataclass(frozen=True)
class Settings:
    actor: str = "void.comind.network"
    agent: str = "void"  # the agent's folder name under <data>/agents/
    plc_url: str = DEFAULT_PLC_URL
    appview_url: str = DEFAULT_APPVIEW_URL
    pds_url: str | None = None  # the agent's PDS for ingest; None: the DID document's
    pipeline_data: str | None = None  # VOID_PIPELINE_DATA as given; lib/layout.data_root() resolves and checks it
    base_model_path: str | None = None  # a local copy of the config's model
    sequence_len: int | None = None  # None: the config's
    trainer_config: str = "llama-3.1-8b-instruct"  # the model choice: axolotl_configs/<name>.yml
    trainer_overlays: tuple[str, ...] = ()
    trainer_max_steps: int | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_ui_url: str | None = None  # the MLflow UI that metadata links to; None: the server, or make mlflow-ui's
    trainer_python: str | None = None  # the trainer image's interpreter; None: the cached trainer environment
    server_python: str | None = None  # the vLLM image's interpreter; None: the cached server environment
    collections: tuple[str, ...] = DEFAULT_COLLECTIONS
    automation: bool = False  # schedules, sensors and automation conditions start running (else: off until switched on)
    retrain_min_new_examples: int = 500  # the weekly retrain runs only when the training set grew by this many
    retrain_on_deletions: int = 1  # ... or when this many of the adapter's training examples were deleted (0: never)
    live_interval_s: int = 30  # seconds between agent_repo_sensor's ticks
    executor: str | None = None  # "k8s": each step a Kubernetes Job; "docker"; both: Pipes steps in containers
    # the Pipes steps' container (docker/k8s): the trainer image, the data volume (Docker) or claim (Kubernetes)
    # mounted at the data folder's path, the Docker network; the defaults are compose's and the Helm values' names
    trainer_image: str = "void-pipeline/trainer"
    data_volume: str = "void-pipeline-data"
    docker_network: str = "void-pipeline"
    accelerator: str = "auto"  # auto | cuda | cpu: lib/accelerator.resolve() turns it into cuda or cpu
    serve_url: str | None = None  # a serving endpoint this machine did not start; None: the managed server
    serve_api_key: str | None = field(default=None, repr=False)
    app_password: str | None = field(default=None, repr=False)  # the agent's app password (ingest, reply --post)
    judge_api_key: str | None = field(default=None, repr=False)
    reply_handle: str | None = None  # the account `reply --post` publishes as (VOID_HANDLE)
    reply_pds_url: str = DEFAULT_REPLY_PDS_URL
    problems: tuple[str, ...] = field(default=())
    sources: tuple[Source, ...] = field(default=())  # every VOID_* variable in force and where it came from
    notes: tuple[str, ...] = field(default=())  # a settings file that was not applied, and why


SETTINGS_FILE_ENV = "VOID_SETTINGS_FILE"
SECRET_WORDS = ("PASSWORD", "KEY", "TOKEN", "SECRET")
AGENT_SELECTORS = ("VOID_ACTOR", "VOID_AGENT")


@dataclass(frozen=True)
class Source:
    name: str
    value: str  # "(set)" for a secret
    origin: str  # "environment" or "file <path>"


def read_settings_file(path: Path) -> dict[str, str]:
    """``export VOID_X=value`` (or ``VOID_X=value``) lines, shell-quoted; other lines and names are ignored."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            words = words[1:]
        if len(words) == 1 and "=" in words[0]:
            name, _, value = words[0].partition("=")
            if name.startswith("VOID_") and name != SETTINGS_FILE_ENV:
                found[name] = value
    return found


def layered(env: Mapping[str, str]) -> tuple[dict[str, str], tuple[Source, ...], tuple[str, ...], list[str]]:
    """(the variables in force, their sources, notes, problems): the environment over ``$VOID_SETTINGS_FILE``."""
    mine = {k: v for k, v in env.items() if k.startswith("VOID_") and k != SETTINGS_FILE_ENV}
    layer: dict[str, str] = {}
    notes: list[str] = []
    problems: list[str] = []
    file = env.get(SETTINGS_FILE_ENV, "").strip()
    if file:
        try:
            layer = read_settings_file(Path(file))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            problems.append(f"{SETTINGS_FILE_ENV}={file!r} cannot be read: {err}")
        for name in AGENT_SELECTORS:
            if name in mine and name in layer and mine[name] != layer[name]:
                notes.append(f"{file} is not applied: {name}={mine[name]} selects another agent than its {layer[name]}")
                layer = {}
                break
    merged = {**env, **{k: v for k, v in layer.items() if k not in mine}}
    origin = {name: "environment" if name in mine else f"file {file}" for name in {**layer, **mine}}
    sources = [
        Source(name, "(set)" if any(w in name for w in SECRET_WORDS) else value, origin[name])
        for name, value in sorted({**layer, **mine}.items())
    ]
    return merged, tuple(sources), tuple(notes), problems


def interpreter(env: Mapping[str, str], name: str, problems: list[str]) -> str | None:
    """``env[name]`` as a Python interpreter that exists (an image's own); None when unset."""
    raw = env.get(name, "").strip()
    if raw and not (os.path.isfile(raw) and os.access(raw, os.X_OK)):
        problems.append(f"{name}={raw!r} is not an executable Python interpreter")
        return None
    return raw or None


def positive_int(
    env: Mapping[str, str], name: str, meaning: str, problems: list[str], zero_is_unset: bool = False
) -> int | None:
    """``env[name]`` as a whole number ≥ 1; None when unset (or 0, with ``zero_is_unset``: how an operator says
    "none" over a value a settings file gives); a problem naming the variable otherwise."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name}={raw!r} is not a whole number ({meaning})")
        return None
    if value == 0 and zero_is_unset:
        return None
    if value < 1:
        problems.append(f"{name}={value} must be at least 1 ({meaning})")
        return None
    return value


def from_environment(env: Mapping[str, str] | None = None) -> Settings:
    env, sources, notes, problems = layered(os.environ if env is None else env)
    sequence_len = positive_int(
        env, "VOID_SEQUENCE_LEN", "the sequence length in tokens, e.g. 8192; unset: the axolotl config's", problems
    )
    max_steps = positive_int(
        env,
        "VOID_TRAINER_MAX_STEPS",
        "optimizer steps to stop after; 0 or unset: the config's full epochs",
        problems,
        zero_is_unset=True,
    )
    collections: list[str] = []
    for name in (c.strip() for c in env.get("VOID_COLLECTIONS", ",".join(DEFAULT_COLLECTIONS)).split(",")):
        if not name:
            continue
        error = collection_error(name)
        if error:
            problems.append(f"VOID_COLLECTIONS: {error}")
        elif name not in collections:
            collections.append(name)
    if not collections and not any(p.startswith("VOID_COLLECTIONS") for p in problems):
        problems.append("VOID_COLLECTIONS names no collection (comma-separated NSIDs, e.g. app.bsky.feed.post)")
    actor = env.get("VOID_ACTOR") or Settings.actor
    agent = env.get("VOID_AGENT") or default_agent_name(actor)
    if error := agent_name_error(agent):
        problems.append(f"VOID_AGENT: {error}")
        agent = Settings.agent
    if env.get("VOID_BASE_MODEL"):
        problems.append(
            "VOID_BASE_MODEL is no longer read: the axolotl config names the base model; choose one with "
            "VOID_TRAINER_CONFIG (axolotl_configs/<name>.yml) and point VOID_BASE_MODEL_PATH at a local copy"
        )
    trainer_config = env.get("VOID_TRAINER_CONFIG") or Settings.trainer_config
    overlays = tuple(o.strip() for o in env.get("VOID_TRAINER_OVERLAYS", "").split(",") if o.strip())
    try:
        choose_model(trainer_config, overlays)
    except ValueError as err:
        problems.append(f"VOID_TRAINER_CONFIG/VOID_TRAINER_OVERLAYS: {err}")
        trainer_config, overlays = Settings.trainer_config, ()
    automation_raw = env.get("VOID_AUTOMATION", "off").strip().lower()
    if automation_raw not in ("on", "off", ""):
        problems.append(f"VOID_AUTOMATION={automation_raw!r} must be on or off")
    retrain_min = positive_int(
        env, "VOID_RETRAIN_MIN_NEW_EXAMPLES", "new training examples that make the weekly retrain run", problems
    )
    deletions_raw = env.get("VOID_RETRAIN_ON_DELETIONS", "").strip()
    retrain_deletions = (
        0
        if deletions_raw.isdigit() and int(deletions_raw) == 0  # 0: deletions never make the retrain run
        else positive_int(
            env, "VOID_RETRAIN_ON_DELETIONS", "deleted training examples that make the weekly retrain run", problems
        )
    )
    live_interval = positive_int(env, "VOID_LIVE_INTERVAL_S", "seconds between the firehose sensor's ticks", problems)
    executor = env.get("VOID_EXECUTOR", "").strip() or None
    if executor is not None and executor not in EXECUTORS:
        problems.append(
            f"VOID_EXECUTOR={executor!r} must be docker, k8s or unset (Dagster's default executor, no containers)"
        )
        executor = None
    accelerator = env.get(ACCELERATOR_ENV, "").strip().lower() or Settings.accelerator
    if error := choice_error(accelerator):
        problems.append(error)
        accelerator = Settings.accelerator
    data_volume = env.get("VOID_DATA_VOLUME") or Settings.data_volume
    if not VOLUME_NAME.match(data_volume):
        problems.append(
            f"VOID_DATA_VOLUME={data_volume!r} is not a volume or claim name (lowercase letters, digits, -)"
        )
        data_volume = Settings.data_volume
    tracking_uri = env.get("VOID_MLFLOW_TRACKING_URI") or None
    if tracking_uri is None and env.get(MLFLOW_CLIENT_URI_ENV):
        tracking_uri = env[MLFLOW_CLIENT_URI_ENV]
        sources = (*sources, Source(MLFLOW_CLIENT_URI_ENV, tracking_uri, "environment"))
    return Settings(
        actor=actor,
        agent=agent,
        plc_url=env.get("VOID_PLC_URL") or Settings.plc_url,
        appview_url=env.get("VOID_APPVIEW_URL") or Settings.appview_url,
        pds_url=env.get("VOID_PDS_URL") or None,
        pipeline_data=env.get("VOID_PIPELINE_DATA") or None,
        base_model_path=env.get("VOID_BASE_MODEL_PATH") or None,
        sequence_len=sequence_len,
        trainer_config=trainer_config,
        trainer_overlays=overlays,
        trainer_max_steps=max_steps,
        mlflow_tracking_uri=tracking_uri,
        mlflow_ui_url=env.get("VOID_MLFLOW_UI_URL") or None,
        trainer_python=interpreter(env, "VOID_TRAINER_PYTHON", problems),
        server_python=interpreter(env, "VOID_SERVER_PYTHON", problems),
        collections=tuple(collections) or DEFAULT_COLLECTIONS,
        automation=automation_raw == "on",
        retrain_min_new_examples=retrain_min or Settings.retrain_min_new_examples,
        retrain_on_deletions=Settings.retrain_on_deletions if retrain_deletions is None else retrain_deletions,
        live_interval_s=live_interval or Settings.live_interval_s,
        executor=executor,
        accelerator=accelerator,
        trainer_image=env.get("VOID_TRAINER_IMAGE") or Settings.trainer_image,
        data_volume=data_volume,
        docker_network=env.get("VOID_DOCKER_NETWORK") or Settings.docker_network,
        serve_url=env.get(SERVE_URL_ENV) or None,
        serve_api_key=env.get(SERVE_API_KEY_ENV) or None,
        app_password=env.get(APP_PASSWORD_ENV) or None,
        judge_api_key=env.get(JUDGE_API_KEY_ENV) or None,
        reply_handle=env.get("VOID_HANDLE") or None,
        reply_pds_url=env.get("VOID_REPLY_PDS_URL") or Settings.reply_pds_url,
        problems=tuple(problems),
        sources=sources,
        notes=notes,
    )


def settings() -> Settings:
    """This process's settings, parsed once (a test that changes a variable gets them parsed again; the settings
    file is read with them)."""
    mine = frozenset((k, v) for k, v in os.environ.items() if k.startswith("VOID_") or k == MLFLOW_CLIENT_URI_ENV)
    return parsed(mine)


@functools.lru_cache(maxsize=8)
def parsed(env: frozenset[tuple[str, str]]) -> Settings:
    return from_environment(dict(env))
