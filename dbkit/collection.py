"""Bulk work without the cyclic garbage collector.

Building a chunk of a hundred thousand events (dicts, tuples, strings) sets the collector off every 700
allocations, and each of its younger generations' passes, and every tenth older one, walks what the chunk holds so
far: parsing a chunk of JSON Lines took twice as long with it as without. Events, rows and their values hold no
reference cycles, so reference counting frees them all the same; a cycle made meanwhile (an exception and its
traceback) is collected once the block is left.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["cyclic_collection_paused"]


@contextmanager
def cyclic_collection_paused() -> Iterator[None]:
    """The cyclic collector off for the block (as it was before, after it; nested blocks leave it to the
    outermost)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
