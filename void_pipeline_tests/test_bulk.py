"""lib/bulk.py: the cyclic collector paused for a bulk step and resumed as it was."""

from __future__ import annotations

import gc

import pytest

from void_pipeline.lib.bulk import gc_paused


def test_the_collector_is_paused_inside_and_resumed_by_the_outermost_block_only() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block does not resume it
    assert gc.isenabled()


def test_the_collector_is_resumed_when_the_block_raises_and_left_off_when_it_was_off() -> None:
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@gc_paused()
def _decorated() -> bool:
    return gc.isenabled()


def test_it_decorates_a_function() -> None:
    assert _decorated() is False
    assert gc.isenabled()
