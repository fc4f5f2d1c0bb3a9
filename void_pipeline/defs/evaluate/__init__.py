"""Evaluate: held-out generations through a real vLLM server, and the report with the gates serving waits on; the
blind review's results once people have rated its pack; the shadow run of each day's live replies."""

import dagster as dg

from void_pipeline.defs.evaluate.assets import eval_generations, eval_report
from void_pipeline.defs.evaluate.review import review_results
from void_pipeline.defs.evaluate.shadow import shadow_daily, shadow_job, shadow_replies, shadow_sooner
from void_pipeline.defs.evaluate.shadow_report import shadow_report
from void_pipeline.defs.metadata import with_code_references

defs = dg.Definitions(
    assets=with_code_references([eval_generations, eval_report, review_results, shadow_replies, shadow_report]),
    jobs=[shadow_job],
    schedules=[shadow_daily],
    sensors=[shadow_sooner],
)
