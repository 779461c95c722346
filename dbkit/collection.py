"""Bulk work without the cyclic garbage collector.

Building a chunk of a hundred thousand events (dicts, tuples, strings) sets the collector off every 700
allocations, and each of its younger generations' passes, and every tenth older one, walks what the chunk holds so
far: parsing a chunk of JSON Lines took twice as long with it as without. Events, rows and their values hold no
reference cycles, so reference counting frees them all the same; a cycle made meanwhile (an exception and its
traceback) is collected once the work is over.

The collector is one per process: the threads of a server (its event writers, its usage reactor) pause it
together, and it runs again when the last of them is done (a count kept under a lock; each thread's "was it on?"
would race with the others'). A forked child starts with no pause of its own.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["cyclic_collection_paused"]

_guard = threading.Lock()
_pauses = 0  # blocks in progress, in every thread
_was_on = False  # whether the collector ran when the first of them began


@contextmanager
def cyclic_collection_paused() -> Iterator[None]:
    """The cyclic collector off for the block: on again when the last block in progress (in any thread) ends, if it
    was on when the first began."""
    global _pauses, _was_on
    with _guard:
        if _pauses == 0:
            _was_on = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _guard:
            _pauses -= 1
            if _pauses == 0 and _was_on:
                gc.enable()


def _after_fork_in_child() -> None:
    global _guard, _pauses
    _guard = threading.Lock()  # (held, perhaps, by a thread of the parent's that the child does not have)
    if _pauses:  # forked inside a block (a parsing worker of a file's ingestion): the parent's block is not ours
        _pauses = 0
        if _was_on:
            gc.enable()


os.register_at_fork(after_in_child=_after_fork_in_child)
