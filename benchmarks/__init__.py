"""Benchmarks: each prints its measurements side by side in one run (never timed assertions in tests)."""
