"""Curate: filtered records, the context window, and chat datasets in the handler's own prompt."""

import dagster as dg

from void_pipeline.defs.curate.assets import chat_dataset, context_window, filtered_records
from void_pipeline.defs.curate.checks import (
    chat_dataset_has_no_split_leak,
    chat_dataset_tool_calls_are_valid,
    filtered_records_are_clean,
)
from void_pipeline.defs.metadata import with_code_references

defs = dg.Definitions(
    assets=with_code_references([filtered_records, context_window, chat_dataset]),
    asset_checks=[filtered_records_are_clean, chat_dataset_has_no_split_leak, chat_dataset_tool_calls_are_valid],
)
