"""The Dagster code location: the definitions of every stage, merged, with resources from the environment.

Each stage package under ``void_pipeline/defs/`` exposes ``defs``; listing them here (rather than scanning
folders) keeps the location loadable the same way from a checkout and from an installed wheel.

Environment (all optional; the defaults point at the real network):
    VOID_ACTOR, VOID_PLC_URL, VOID_APPVIEW_URL, VOID_PDS_URL   the agent and its services (VOID_PDS_URL: its PDS)
    VOID_AGENT                                               the agent's folder name (default: the handle's first label)
    VOID_APP_PASSWORD                                        read by Dagster at run time, never stored
    VOID_PIPELINE_DATA                                       where assets write (default <repo>/.data)
    VOID_TRAINER_CONFIG, VOID_TRAINER_OVERLAYS               the model choice: the axolotl config names the model
    VOID_BASE_MODEL_PATH, VOID_SEQUENCE_LEN                   a local copy of that model; its sequence length
    VOID_TRAINER_MAX_STEPS                                   stop training after this many steps (0: no cap)
    VOID_SETTINGS_FILE                                       `export VOID_X=...` lines for what the environment
                                                             leaves unset (make ui: the demo's, a devnet's)
    VOID_MLFLOW_TRACKING_URI                                 MLflow (default: SQLite under the data folder)
    VOID_EXECUTOR, VOID_SERVE_URL, VOID_SERVE_API_KEY        k8s steps; a serving endpoint; its key
    VOID_TRAINER_IMAGE, VOID_DATA_VOLUME, VOID_DOCKER_NETWORK  docker/k8s: the GPU steps' trainer container
Every one is parsed once, by lib/settings.py (``python -m void_pipeline settings`` shows them).
"""

import sys

import dagster as dg

from void_pipeline.defs import curate, evaluate, ingest, serve, train
from void_pipeline.defs.automation import pipeline_automation
from void_pipeline.lib.layout import DataRootError, data_root
from void_pipeline.lib.settings import APP_PASSWORD_ENV, Settings, settings
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.model import ModelChoice
from void_pipeline.resources.server import InferenceServer
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer


def resources_from_environment(chosen: Settings | None = None) -> dict[str, object]:
    """Resources from ``VOID_*`` variables. A bad value is reported, not raised: the location loads, and every
    run refuses to start with a message naming the variable (PipelineStorage.setup_for_execution)."""
    chosen = chosen or settings()
    problems = list(chosen.problems)
    try:
        root = data_root()
    except DataRootError as err:
        problems.append(str(err))
        root = data_root(check=False)
    for problem in problems:
        print(f"void-pipeline: {problem}; every run will refuse to start until it is fixed", file=sys.stderr)
    for note in chosen.notes:
        print(f"void-pipeline: {note}", file=sys.stderr)
    endpoint = AtprotoEndpoint(
        actor=chosen.actor,
        plc_url=chosen.plc_url,
        appview_url=chosen.appview_url,
        pds_url=chosen.pds_url,
        app_password=dg.EnvVar(APP_PASSWORD_ENV) if chosen.app_password else None,
    )
    model = ModelChoice(
        config=chosen.trainer_config,
        overlays=list(chosen.trainer_overlays),
        local_path=chosen.base_model_path,
        sequence_len=chosen.sequence_len,
        accelerator=chosen.accelerator,
    )
    trainer = Trainer(
        overrides={"max_steps": chosen.trainer_max_steps} if chosen.trainer_max_steps else {},
        tracking_uri=chosen.mlflow_tracking_uri,
        ui_url=chosen.mlflow_ui_url,
        python=chosen.trainer_python,
    )
    return {
        "endpoint": endpoint,
        "storage": PipelineStorage(
            root=str(root),
            agent=chosen.agent,
            problems=problems,
            settings={s.name: f"{s.value}  ({s.origin})" for s in chosen.sources},
        ),
        "model": model,
        "trainer": trainer,
        "server": InferenceServer(python=chosen.server_python),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


STAGES: list[dg.Definitions] = [ingest.defs, curate.defs, train.defs, evaluate.defs, serve.defs]


def executor_from_environment() -> dg.ExecutorDefinition | None:
    """VOID_EXECUTOR=k8s (the Helm values set it): each step a Kubernetes Job, GPU steps on GPU nodes by their tags.
    docker keeps Dagster's default executor: only the Pipes steps run in containers (defs/external.py). dagster-k8s
    is imported only when chosen."""
    if settings().executor == "k8s":
        from dagster_k8s import k8s_job_executor

        executor: dg.ExecutorDefinition = k8s_job_executor
        return executor
    return None


defs = dg.Definitions.merge(
    *STAGES,
    dg.Definitions(
        sensors=[pipeline_automation], resources=resources_from_environment(), executor=executor_from_environment()
    ),
)
