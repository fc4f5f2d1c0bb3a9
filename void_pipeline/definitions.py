"""The Dagster code location: the definitions of every stage, merged.

Each stage package under ``void_pipeline/defs/`` exposes ``defs``; listing them here (rather than scanning
folders) keeps the location loadable the same way from a checkout and from an installed wheel.
"""

import dagster as dg

STAGES: list[dg.Definitions] = []

defs = dg.Definitions.merge(*STAGES) if STAGES else dg.Definitions()
