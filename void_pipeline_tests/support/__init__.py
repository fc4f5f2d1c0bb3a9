"""Helpers the tests share (no fixtures, no tests): test modules and conftest files import from here, never from
each other."""
