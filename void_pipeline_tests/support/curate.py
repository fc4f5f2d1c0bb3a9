"""Curate helpers: the agent's kept posts as build_examples reads them."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

# (uri, normalised text, parent uri, root uri, minutes after the start)
PostRow = tuple[str, str, str, str, int]


def kept_posts(rows: list[PostRow], start: datetime) -> pl.DataFrame:
    """The agent's posts as filtered_records keeps them: uri, text_norm, reply parent and root, created_at."""
    return pl.DataFrame(
        [
            {
                "uri": u,
                "text_norm": t,
                "reply_parent_uri": p,
                "reply_root_uri": r,
                "created_at": start + timedelta(minutes=m),
            }
            for u, t, p, r, m in rows
        ]
    )
