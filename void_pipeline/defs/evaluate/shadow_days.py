"""The shadow run's partitions: one per UTC day, today's included (the firehose sensor may shadow it before it ends).

The first day is fixed: a backfill over earlier days shadows the agent's history against today's models, which costs
a model call per reply; an operator chooses the range in the UI."""

import dagster as dg

SHADOW_FIRST_DAY = "2025-01-01"

shadow_days = dg.DailyPartitionsDefinition(start_date=SHADOW_FIRST_DAY, timezone="UTC", end_offset=1)
