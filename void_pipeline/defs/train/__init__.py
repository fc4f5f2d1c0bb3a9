"""Train: the LoRA adapter (GPU pool, one job at a time), through Dagster Pipes."""

import dagster as dg

from void_pipeline.defs.metadata import with_code_references
from void_pipeline.defs.train.assets import lora_adapter, merged_model
from void_pipeline.defs.train.automation import retrain_on_growth, train_job
from void_pipeline.defs.train.checks import lora_adapter_deleted_examples, served_model_deleted_examples

defs = dg.Definitions(
    assets=with_code_references([lora_adapter, merged_model]),
    asset_checks=[lora_adapter_deleted_examples, served_model_deleted_examples],
    jobs=[train_job],
    schedules=[retrain_on_growth],
)
