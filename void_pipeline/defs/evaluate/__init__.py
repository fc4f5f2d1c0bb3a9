"""Evaluate: held-out generations through a real vLLM server, and the report with the gates serving waits on."""

import dagster as dg

from void_pipeline.defs.evaluate.assets import eval_generations, eval_report

defs = dg.Definitions(assets=[eval_generations, eval_report])
