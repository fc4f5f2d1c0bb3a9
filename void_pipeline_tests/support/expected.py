"""What the ground-truth manifest of a seeded devnet says an account's repo holds."""

from __future__ import annotations

import polars as pl

from void_pipeline.testworld.corpus import COLLECTIONS
from void_pipeline.testworld.seeding import SeedResult


def expected_records(seeded: SeedResult, did: str, collection: str) -> dict[str, str]:
    """uri → cid of what the repo holds now, from the ground-truth manifest."""
    live = seeded.manifest.filter((pl.col("did") == did) & (pl.col("collection") == collection) & ~pl.col("deleted"))
    return dict(zip(live["uri"], live["cid"], strict=True))


def all_expected(seeded: SeedResult, did: str) -> dict[str, dict[str, str]]:
    return {c: expected_records(seeded, did, c) for c in COLLECTIONS}
