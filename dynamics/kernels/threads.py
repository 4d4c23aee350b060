"""Parallel over independent items without ``prange``: ``run_chunks`` calls a
``nogil`` kernel ``entry(lo, hi, *args)`` on chunks of [0, n) from as many
Python threads as Numba threads (``numba.get_num_threads()``, which
``NUMBA_NUM_THREADS`` and ``numba.set_num_threads`` set; ``parallel=False``:
one call on the calling thread, as on a dask worker).

Why not ``prange``: Numba lowers a ``parallel=True`` function through its
parfor passes, which at these call graphs cost about as much compilation as
the whole job path again (a cold depth-1 batch: 88 s with ``prange``, 46 s
with this runner, measured side by side with empty caches), and that once
per type signature.  A ``nogil`` entry compiles as plain serial code; the
threads run it concurrently.  Items are independent (each writes only its
own rows of the outputs), so results do not depend on the thread count or
the chunking, bit for bit.
"""
from __future__ import annotations

import threading

import numba

CHUNKS_PER_THREAD = 4  # chunks handed out on demand: balances jobs of unequal cost


def thread_count(parallel: bool = True) -> int:
    """Threads a call uses: Numba's thread count, or 1 (``parallel=False``)."""
    return numba.get_num_threads() if parallel else 1


def run_chunks(entry, n: int, args: tuple, parallel: bool = True) -> None:
    """``entry(lo, hi, *args)`` for chunks covering [0, n), on
    ``thread_count(parallel)`` threads (the calling thread included), each
    taking the next chunk when it is done.  An exception in a helper thread
    is raised here after all threads finished."""
    threads = min(thread_count(parallel), n)
    if threads <= 1:
        if n > 0:
            entry(0, n, *args)
        return
    size = max(1, -(-n // (CHUNKS_PER_THREAD * threads)))
    chunks = iter([(lo, min(lo + size, n)) for lo in range(0, n, size)])
    lock = threading.Lock()
    errors = []

    def work():
        while not errors:
            with lock:
                chunk = next(chunks, None)
            if chunk is None:
                return
            try:
                entry(chunk[0], chunk[1], *args)
            except Exception as exc:  # re-raised by the calling thread
                errors.append(exc)

    helpers = [threading.Thread(target=work, name=f"dyn-kernel-{k}", daemon=True)
               for k in range(threads - 1)]
    for t in helpers:
        t.start()
    work()
    for t in helpers:
        t.join()
    if errors:
        raise errors[0]
