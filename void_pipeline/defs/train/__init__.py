"""Train: the LoRA adapter (GPU pool, one job at a time), through Dagster Pipes."""

import dagster as dg

from void_pipeline.defs.train.assets import lora_adapter

defs = dg.Definitions(assets=[lora_adapter])
