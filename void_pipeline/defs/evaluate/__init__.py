"""Evaluate: held-out generations through a real vLLM server, and the report with the gates serving waits on."""

import dagster as dg

from void_pipeline.defs.evaluate.assets import eval_generations, eval_report
from void_pipeline.defs.metadata import with_code_references

defs = dg.Definitions(assets=with_code_references([eval_generations, eval_report]))
