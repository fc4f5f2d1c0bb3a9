"""Asset metadata helpers shared by the stages."""

import warnings
from collections.abc import Sequence

import dagster as dg
import polars as pl

OWNERS = ["team:void-pipeline"]  # shown on every asset in the UI


def table_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])


def with_code_references(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Each asset linked to its source file and line in the UI. Dagster marks the API beta and warns at every load
    of the code location; the warning is silenced here, once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [a for a in dg.with_source_code_references(assets) if isinstance(a, dg.AssetsDefinition)]
