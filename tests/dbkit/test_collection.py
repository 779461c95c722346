"""Bulk work pauses the cyclic collector and leaves it as it found it, however the block ends."""

from __future__ import annotations

import gc

import pytest

from dbkit import cyclic_collection_paused


def test_the_collector_is_off_in_the_block_and_on_again_after_it():
    assert gc.isenabled()
    with cyclic_collection_paused():
        assert not gc.isenabled()
        with cyclic_collection_paused():  # a nested block leaves it to the outer one
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_in_the_block_turns_it_on_again():
    with pytest.raises(ZeroDivisionError), cyclic_collection_paused():
        _ = 1 / 0
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off():
    gc.disable()
    try:
        with cyclic_collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
