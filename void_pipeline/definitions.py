"""The Dagster code location: the definitions of every stage, merged, with resources from the environment.

Each stage package under ``void_pipeline/defs/`` exposes ``defs``; listing them here (rather than scanning
folders) keeps the location loadable the same way from a checkout and from an installed wheel.

Environment (all optional; the defaults point at the real network):
    VOID_ACTOR, VOID_PLC_URL, VOID_APPVIEW_URL, VOID_PDS_URL   the agent and its services
    VOID_APP_PASSWORD                                        read by Dagster at run time, never stored
    VOID_PIPELINE_DATA                                       where assets write (default <repo>/.data)
    VOID_BASE_MODEL, VOID_BASE_MODEL_PATH, VOID_SEQUENCE_LEN  the base model and its local directory
    VOID_TRAINER_CONFIG, VOID_TRAINER_OVERLAYS, VOID_TRAINER_MAX_STEPS  the axolotl recipe
    VOID_MLFLOW_TRACKING_URI                                 MLflow (default: SQLite under the data folder)
"""

import os

import dagster as dg

from void_pipeline.defs import curate, ingest, train
from void_pipeline.lib import paths
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.model import BaseModel
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer


def resources_from_environment() -> dict[str, object]:
    endpoint = AtprotoEndpoint(
        actor=os.environ.get("VOID_ACTOR", "void.comind.network"),
        plc_url=os.environ.get("VOID_PLC_URL", "https://plc.directory"),
        appview_url=os.environ.get("VOID_APPVIEW_URL", "https://public.api.bsky.app"),
        pds_url=os.environ.get("VOID_PDS_URL") or None,
        app_password=dg.EnvVar("VOID_APP_PASSWORD") if os.environ.get("VOID_APP_PASSWORD") else None,
    )
    base_model = BaseModel(
        name=os.environ.get("VOID_BASE_MODEL", "meta-llama/Llama-3.1-8B-Instruct"),
        local_path=os.environ.get("VOID_BASE_MODEL_PATH") or None,
        sequence_len=int(os.environ.get("VOID_SEQUENCE_LEN", "8192")),
    )
    trainer = Trainer(
        config=os.environ.get("VOID_TRAINER_CONFIG", "llama-3.1-8b-instruct"),
        overlays=[o for o in os.environ.get("VOID_TRAINER_OVERLAYS", "").split(",") if o],
        overrides={"max_steps": int(os.environ["VOID_TRAINER_MAX_STEPS"])}
        if os.environ.get("VOID_TRAINER_MAX_STEPS")
        else {},
        tracking_uri=os.environ.get("VOID_MLFLOW_TRACKING_URI") or None,
    )
    return {
        "endpoint": endpoint,
        "storage": PipelineStorage(root=str(paths.data_root())),
        "base_model": base_model,
        "trainer": trainer,
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


STAGES: list[dg.Definitions] = [ingest.defs, curate.defs, train.defs]

defs = dg.Definitions.merge(*STAGES, dg.Definitions(resources=resources_from_environment()))
