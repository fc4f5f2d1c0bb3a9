"""Asset metadata helpers shared by the stages."""

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from void_pipeline.lib.ingest.records import COLUMN_DOCS
from void_pipeline.lib.report import Markdown, Table, Url

OWNERS = ["team:void-pipeline"]  # shown on every asset in the UI


def type_name(dtype: Any) -> str:  # a polars DataType (instance or class: nested types hold either)
    """A column type as people read it: string, int32, datetime (UTC), list<string>, struct{a, b}."""
    if isinstance(dtype, pl.Datetime):
        return f"datetime ({dtype.time_zone})" if dtype.time_zone else "datetime"
    if isinstance(dtype, pl.List | pl.Array):
        return f"list<{type_name(dtype.inner)}>"
    if isinstance(dtype, pl.Struct):
        return "struct{" + ", ".join(field.name for field in dtype.fields) + "}"
    names: dict[Any, str] = {pl.String: "string", pl.Boolean: "bool", pl.Date: "date"}
    return names.get(dtype if isinstance(dtype, type) else type(dtype), str(dtype).lower())


def table_schema(frame: pl.DataFrame, docs: Mapping[str, str] = COLUMN_DOCS) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, type_name(dtype), docs.get(name)) for name, dtype in frame.schema.items()]
    )


def table_preview(frame: pl.DataFrame, columns: Sequence[str], rows: int = 10) -> dg.TableMetadataValue:
    """The first ``rows`` rows of ``columns`` as a table the UI renders (long text cut at 200 characters)."""
    head = frame.select([c for c in columns if c in frame.columns]).head(rows)

    def cell(value: object) -> str | int | float | bool | None:
        if value is None or isinstance(value, bool | int | float):
            return value
        text = str(value)
        return text if len(text) <= 200 else text[:199] + "…"

    records = [dg.TableRecord({k: cell(v) for k, v in row.items()}) for row in head.iter_rows(named=True)]
    schema = dg.TableSchema(columns=[dg.TableColumn(n, type_name(t)) for n, t in head.schema.items()])
    return dg.MetadataValue.table(records, schema)


def as_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's plain metadata (lib/<stage>/metadata.py) as the UI shows it: Path → path, Markdown → markdown,
    Url → link, Table → table, dict or list → JSON; numbers, strings and Dagster's own values as they are."""

    def shown(value: Any) -> Any:
        if isinstance(value, Path):
            return dg.MetadataValue.path(str(value))
        if isinstance(value, Markdown):
            return dg.MetadataValue.md(str(value))
        if isinstance(value, Url):
            return dg.MetadataValue.url(str(value))
        if isinstance(value, Table):
            return table_preview(value.frame, value.frame.columns, rows=value.frame.height)
        if isinstance(value, dict | list):
            return dg.MetadataValue.json(value)
        return value

    return {key: shown(value) for key, value in values.items()}


def with_code_references(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Each asset linked to its source file and line in the UI. Dagster marks the API beta and warns at every load
    of the code location; the warning is silenced here, once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [a for a in dg.with_source_code_references(assets) if isinstance(a, dg.AssetsDefinition)]
