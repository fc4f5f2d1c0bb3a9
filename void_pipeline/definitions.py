"""The Dagster code location: the definitions of every stage, merged, with resources from the environment.

Each stage package under ``void_pipeline/defs/`` exposes ``defs``; listing them here (rather than scanning
folders) keeps the location loadable the same way from a checkout and from an installed wheel.

Environment (all optional; the defaults point at the real network):
    VOID_ACTOR, VOID_PLC_URL, VOID_APPVIEW_URL, VOID_PDS_URL   the agent and its services
    VOID_APP_PASSWORD                                        read by Dagster at run time, never stored
    VOID_PIPELINE_DATA                                       where assets write (default <repo>/.data)
    VOID_BASE_MODEL, VOID_BASE_MODEL_PATH, VOID_SEQUENCE_LEN  the base model and its local directory
"""

import os

import dagster as dg

from void_pipeline.defs import curate, ingest
from void_pipeline.lib import paths
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.model import BaseModel
from void_pipeline.resources.storage import PipelineStorage


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
    return {"endpoint": endpoint, "storage": PipelineStorage(root=str(paths.data_root())), "base_model": base_model}


STAGES: list[dg.Definitions] = [ingest.defs, curate.defs]

defs = dg.Definitions.merge(*STAGES, dg.Definitions(resources=resources_from_environment()))
