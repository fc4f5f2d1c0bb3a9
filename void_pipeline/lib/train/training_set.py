"""What an adapter was trained on, by post: the train split's example ids with the URIs each example was made from
(chat_dataset's index), kept in the run folder; and how many of them were deleted upstream since.

The digest of the URIs (sha256 of the sorted, distinct URIs joined by newlines) names the training set in the
training hand-off, the metadata and the MLflow run: two adapters with the same digest learned from the same posts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from void_pipeline.lib.files import write_parquet_atomic
from void_pipeline.lib.ingest.deletions import REASONS, read_deletions
from void_pipeline.lib.layout import DatasetPaths, IngestPaths

TRAINING_SET_SCHEMA: dict[str, pl.DataType] = {"example_id": pl.String(), "source_uris": pl.List(pl.String())}
URIS_SHOWN = 50  # the deleted URIs a check's metadata lists


def uris_digest(uris: Iterable[str]) -> str:
    """sha256 (hex) of the sorted, distinct URIs joined by newlines."""
    return hashlib.sha256("\n".join(sorted(set(uris))).encode()).hexdigest()


@dataclass(frozen=True)
class TrainingSet:
    examples: int
    uris: int  # distinct source URIs
    digest: str | None  # None: the dataset was built before examples recorded their sources


def record_training_set(dataset: Path, path: Path) -> TrainingSet:
    """Write the train split's example ids and source URIs (TRAINING_SET_SCHEMA) to ``path``, from the dataset's
    index. A dataset built before the index held ``source_uris`` gives ids only, and no digest."""
    index = pl.read_parquet(DatasetPaths(dataset).index).filter(pl.col("split") == "train")
    known = "source_uris" in index.columns
    sources = index["source_uris"] if known else pl.Series("source_uris", [None] * index.height)
    frame = pl.DataFrame({"example_id": index["example_id"], "source_uris": sources}, schema=TRAINING_SET_SCHEMA).sort(
        "example_id"
    )
    write_parquet_atomic(frame, path)
    uris = frame["source_uris"].explode().drop_nulls().unique() if known else pl.Series([], dtype=pl.String)
    return TrainingSet(frame.height, uris.len(), uris_digest(uris.to_list()) if known else None)


@dataclass(frozen=True)
class DeletedSince:
    """The examples of one training set that show or answer with a post the ledger holds."""

    examples: int  # examples with at least one deleted source
    training_examples: int
    by_reason: dict[str, int]  # examples by the reason of their first deleted source (REASONS order)
    uris: list[str]  # the deleted source URIs, oldest sighting first
    known: bool  # False: the training set has no source URIs (nothing can be counted)

    def summary(self) -> str:
        if not self.known:
            return "this adapter's training set has no source URIs (a dataset built before they were recorded)"
        return f"{self.examples} examples of this adapter's training set were deleted since"


def deleted_since(training_set: Path, ingest: IngestPaths) -> DeletedSince:
    """How many examples of the training set at ``training_set`` the deletions ledger now touches."""
    frame = pl.read_parquet(training_set)
    known = frame.height == 0 or frame["source_uris"].null_count() < frame.height
    pairs = frame.explode("source_uris").drop_nulls("source_uris")
    ledger = read_deletions(ingest).select("uri", "reason", "seen_at")
    hits = pairs.join(ledger, left_on="source_uris", right_on="uri", how="inner").sort("seen_at", "source_uris")
    first = hits.unique("example_id", keep="first")
    counts = dict(first.group_by("reason").len().iter_rows())
    by_reason: dict[str, int] = {reason: int(counts[reason]) for reason in REASONS if reason in counts}
    uris = hits.unique("source_uris", keep="first", maintain_order=True)["source_uris"].to_list()
    return DeletedSince(first.height, frame.height, by_reason, uris, known)
