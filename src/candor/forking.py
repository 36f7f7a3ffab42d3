"""Worker processes forked from the current one, for bulk work that is CPU-bound in Python.

An import's row validation (identity/records.py) and a full resolution's decryption
(identity/resolve.py) run in forked children so that they use a second core: a child inherits the
validator, its detectors and the keys already loaded, and rebuilds nothing. What makes that safe:

- the children are started at once, while the parent is between two steps (its writer thread idle);
- every store engine forgets its pooled connections in a child (store/engine.py), and the vault gets
  a fresh lock (vault.py), so a child never shares a connection or waits on a lock held at the fork;
- the parent's objects are frozen for the collector while the children start (``gc.freeze``), so a
  collection in a child does not touch, and copy, every page of the parent's heap.

Linux only: fork is not safe with the system frameworks macOS loads; elsewhere the work stays in the
calling process, with the same result.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def cores() -> int:
    return os.cpu_count() or 1


@contextmanager
def forked_pool(workers: int, initializer: Callable[..., None], *initargs: Any) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` forked processes, started before this returns; each runs
    ``initializer(*initargs)`` with the parent's objects (inherited, not pickled)."""
    ctx = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs)
    try:
        gc.freeze()
        try:
            pool.submit(int).result()  # a fork pool starts all its processes on the first task
        finally:
            gc.unfreeze()
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
