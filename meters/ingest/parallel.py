"""A large JSON Lines file parsed and validated by forked worker processes (``dbkit.forkpool``: they never
collect what they inherit and die with the ingesting process), while the calling thread stores the chunks they
hand back, in file order: parsing and storing each take about one core.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from itertools import chain, islice, pairwise
from typing import IO, Any

from dbkit.collection import cyclic_collection_paused
from dbkit.forkpool import can_fork, fork_pool
from meters.events import EventValidator
from meters.ingest.read import Chunk, Settings, jsonl_block, jsonl_blocks

__all__ = ["jsonl_chunks"]

OnParsed = Callable[[list[tuple[Any, ...]], Collection[str]], object]
"""``meters_on_parsed``: what a worker makes of a chunk's events (with the known customers), for ``on_stored``."""

_worker_validator: EventValidator | None = None
_worker_on_parsed: tuple[OnParsed, Collection[str]] | None = None


def _prepare_worker(settings: Settings, on_parsed: OnParsed | None) -> None:
    global _worker_validator, _worker_on_parsed
    _worker_validator = EventValidator(*settings)
    _worker_on_parsed = None if on_parsed is None else (on_parsed, settings[1])


def _jsonl_block_in_worker(first_line: int, block: list[bytes]) -> Chunk:
    assert _worker_validator is not None
    with cyclic_collection_paused():
        chunk = jsonl_block(_worker_validator, first_line, block, keep_raw=False)
        if _worker_on_parsed is not None and chunk.events:
            on_parsed, known = _worker_on_parsed
            chunk.summary = on_parsed(chunk.events, known)
    return chunk


def jsonl_chunks(
    stream: IO[bytes], settings: Settings, size: int, workers: int, on_parsed: OnParsed | None = None
) -> Iterator[Chunk]:
    """A JSON Lines input, chunk by chunk, in order; validated by worker processes when it is more than one
    chunk long and ``workers`` > 0, so that the caller stores a chunk while the next ones are parsed (each
    chunk's ``summary`` made there by ``on_parsed``, when given)."""
    blocks = jsonl_blocks(stream, size)
    head = list(islice(blocks, 2))
    if len(head) < 2 or workers <= 0 or not can_fork():
        validator = EventValidator(*settings)
        for first_line, block in chain(head, blocks):
            chunk = jsonl_block(validator, first_line, block, keep_raw=True)
            chunk.size = sum(map(len, block))
            yield chunk
        return
    # The workers only parse (every module they need is already imported) and never touch the parent's database
    # connections.
    with fork_pool(workers, initializer=_prepare_worker, initargs=(settings, on_parsed)) as pool:
        in_flight: deque[tuple[Future[Chunk], list[bytes]]] = deque()
        try:
            for first_line, block in chain(_ramp(*head[0]), head[1:], blocks):
                in_flight.append((pool.submit(_jsonl_block_in_worker, first_line, block), block))
                if len(in_flight) > workers:
                    yield _received(*in_flight.popleft())
            while in_flight:
                yield _received(*in_flight.popleft())
        finally:
            for future, _ in in_flight:
                future.cancel()


def _ramp(first_line: int, block: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """The first block in parts of an eighth, an eighth, a quarter and a half: the caller waits for the first part
    to be parsed before it can store anything, then stores each part while the worker parses the next, larger one
    (the first chunk of a file of 100,000-line chunks is stored after 12,500 lines are parsed, not 100,000)."""
    if len(block) < 8:
        yield first_line, block
        return
    for start, end in pairwise([0, len(block) // 8, len(block) // 4, len(block) // 2, len(block)]):
        yield first_line + start, block[start:end]


def _received(future: Future[Chunk], block: list[bytes]) -> Chunk:
    chunk = future.result()
    chunk.block = block
    chunk.size = sum(map(len, block))
    return chunk
