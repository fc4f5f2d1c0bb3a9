"""One package per pipeline stage; each exposes ``defs``."""
