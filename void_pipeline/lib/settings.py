"""The code location's settings from ``VOID_*`` environment variables, parsed once and checked.

A bad value never stops the code location from loading: it is reported as a problem naming the variable, the
resources keep the default, and every run refuses to start until it is fixed (``PipelineStorage`` raises the
problems when a step sets it up). The CLI prints the same messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from void_pipeline.lib.ingest.records import DEFAULT_COLLECTIONS, collection_error
from void_pipeline.lib.layout import agent_name_error, default_agent_name
from void_pipeline.lib.model import choose_model


@dataclass(frozen=True)
class Settings:
    actor: str = "void.comind.network"
    agent: str = "void"  # the agent's folder name under <data>/agents/
    plc_url: str = "https://plc.directory"
    appview_url: str = "https://public.api.bsky.app"
    pds_url: str | None = None
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
    live_interval_s: int = 30  # seconds between agent_repo_sensor's ticks
    problems: tuple[str, ...] = field(default=())


def interpreter(env: Mapping[str, str], name: str, problems: list[str]) -> str | None:
    """``env[name]`` as a Python interpreter that exists (an image's own); None when unset."""
    raw = env.get(name, "").strip()
    if raw and not (os.path.isfile(raw) and os.access(raw, os.X_OK)):
        problems.append(f"{name}={raw!r} is not an executable Python interpreter")
        return None
    return raw or None


def positive_int(env: Mapping[str, str], name: str, meaning: str, problems: list[str]) -> int | None:
    """``env[name]`` as a whole number ≥ 1; None when unset; a problem naming the variable otherwise."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name}={raw!r} is not a whole number ({meaning})")
        return None
    if value < 1:
        problems.append(f"{name}={value} must be at least 1 ({meaning})")
        return None
    return value


def from_environment(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    problems: list[str] = []
    sequence_len = positive_int(
        env, "VOID_SEQUENCE_LEN", "the sequence length in tokens, e.g. 8192; unset: the axolotl config's", problems
    )
    max_steps = positive_int(
        env,
        "VOID_TRAINER_MAX_STEPS",
        "optimizer steps to stop after; unset it to train the config's full epochs",
        problems,
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
    live_interval = positive_int(env, "VOID_LIVE_INTERVAL_S", "seconds between the firehose sensor's ticks", problems)
    return Settings(
        actor=actor,
        agent=agent,
        plc_url=env.get("VOID_PLC_URL") or Settings.plc_url,
        appview_url=env.get("VOID_APPVIEW_URL") or Settings.appview_url,
        pds_url=env.get("VOID_PDS_URL") or None,
        base_model_path=env.get("VOID_BASE_MODEL_PATH") or None,
        sequence_len=sequence_len,
        trainer_config=trainer_config,
        trainer_overlays=overlays,
        trainer_max_steps=max_steps,
        mlflow_tracking_uri=env.get("VOID_MLFLOW_TRACKING_URI") or None,
        mlflow_ui_url=env.get("VOID_MLFLOW_UI_URL") or None,
        trainer_python=interpreter(env, "VOID_TRAINER_PYTHON", problems),
        server_python=interpreter(env, "VOID_SERVER_PYTHON", problems),
        collections=tuple(collections) or DEFAULT_COLLECTIONS,
        automation=automation_raw == "on",
        retrain_min_new_examples=retrain_min or Settings.retrain_min_new_examples,
        live_interval_s=live_interval or Settings.live_interval_s,
        problems=tuple(problems),
    )
