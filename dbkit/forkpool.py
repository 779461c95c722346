"""One pool of forked worker processes, for CPU-bound work beside a process that holds database connections.

Workers are forked, not spawned: spawning would run the caller's main module again in each worker, and forking
hands them, for nothing, whatever the parent prepared (a validator, a billing run's inputs). Two rules make a
forked worker safe next to the parent's database connections, and every worker of this pool follows both:

- it never collects the objects it inherited (``gc.freeze``): a collected connection would close the parent's
  socket or file;
- it dies with its parent: a thread waits on the parent's sentinel and ends the worker at once when the parent
  is gone, however it went (SIGKILL included). A worker left behind would keep the parent's database sockets
  open (a PostgreSQL session holding locks the next run waits for) and its CPU busy.

    if can_fork():
        with fork_pool(workers, initializer=_prepare, initargs=(settings,)) as pool:
            ...
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import wait
from typing import Any

__all__ = ["can_fork", "fork_pool"]


def can_fork() -> bool:
    """Forking is safe here: the platform has it and this process runs one thread (a lock held by another
    thread at the fork would stay held for ever in the child)."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


@contextmanager
def fork_pool(
    workers: int,
    *,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``workers`` forked processes that never collect what they inherited and die
    with this process; each runs ``initializer(*initargs)`` (if given) once it is set up. Shut down (waiting
    for the workers) on leaving the block."""
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(initializer, initargs)
    ) as pool:
        yield pool


def _start_worker(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the work (and says what was stored); a worker
    # printing its own KeyboardInterrupt traceback would only bury that
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()
    _die_with_parent()
    _keep_freed_memory()
    if initializer is not None:
        initializer(*initargs)


_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2  # glibc's mallopt parameters (malloc.h)


def _keep_freed_memory() -> None:
    """Keep the memory this worker frees for its next task rather than give it back to the system. A worker
    builds and drops hundreds of megabytes a task (a file's chunk of 100,000 lines: its text, the parsed records,
    the events); by default glibc hands the top of its heap back once it is freed, and the next task faults every
    page in again: measured, about 124,000 page faults a chunk, a third of a parsing worker's CPU spent in the
    kernel. With a trim threshold of 1 GiB and 64 MiB of padding, about 32,000. The worker dies with its job and
    its memory with it. Other C libraries (musl, macOS) keep their own ways."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this interpreter runs on
    except (OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    mallopt(_M_TOP_PAD, 64 << 20)


def _die_with_parent() -> None:
    """End this worker as soon as its parent process is gone (its sentinel becomes ready when it exits)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
