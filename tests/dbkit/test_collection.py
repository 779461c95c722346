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


def test_two_threads_leave_the_collector_on_whatever_their_order():
    # A pauses, B pauses while A's pause lasts, A ends, B ends: on again (each thread looking at the collector
    # for itself, B would have found it off, and left it off for good)
    import threading

    b_in, a_out = threading.Event(), threading.Event()

    def b() -> None:
        with cyclic_collection_paused():
            b_in.set()
            a_out.wait()
            assert not gc.isenabled()  # A's end does not turn it on while B's pause lasts

    thread = threading.Thread(target=b)
    with cyclic_collection_paused():
        thread.start()
        b_in.wait()
    assert not gc.isenabled()
    a_out.set()
    thread.join()
    assert gc.isenabled()


def test_a_child_forked_inside_a_pause_collects_again():
    import os

    with cyclic_collection_paused():
        child = os.fork()
        if child == 0:  # (the child: exit status 0 if its collector is on, and a pause of its own works)
            on = gc.isenabled()
            with cyclic_collection_paused():
                paused = not gc.isenabled()
            os._exit(0 if on and paused and gc.isenabled() else 1)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert gc.isenabled()
