"""Ingest: an agent's repo and the threads its replies answer, exported from the AT Protocol to Parquet."""
