"""Ingest: the agent's repo per collection (raw_records) and every reply's ancestors (thread_context)."""

import dagster as dg

from void_pipeline.defs.ingest.assets import raw_records, thread_context
from void_pipeline.defs.ingest.automation import (
    agent_repo_sensor,
    daily_ingest,
    ingest_job,
    recheck_deleted_posts,
    recheck_job,
)
from void_pipeline.defs.ingest.checks import raw_records_unique_uris, thread_context_covers_every_reply
from void_pipeline.defs.metadata import with_code_references

defs = dg.Definitions(
    assets=with_code_references([raw_records, thread_context]),
    asset_checks=[raw_records_unique_uris, thread_context_covers_every_reply],
    jobs=[ingest_job, recheck_job],
    schedules=[daily_ingest, recheck_deleted_posts],
    sensors=[agent_repo_sensor],
)
