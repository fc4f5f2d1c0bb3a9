"""Asset metadata helpers shared by the stages."""

import dagster as dg
import polars as pl


def table_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])
