"""Train: the LoRA adapter (GPU pool, one job at a time), through Dagster Pipes."""

import dagster as dg

from void_pipeline.defs.train.assets import lora_adapter, merged_model

defs = dg.Definitions(assets=[lora_adapter, merged_model])
