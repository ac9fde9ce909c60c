"""Independent pieces of one slice's work on the process's compute workers (:func:`pmap`).

A slice's repeats are independent in places, such as the GRAPPA batches of ``unfold``, whose
large FFTs, BLAS products and array operations release the GIL, so a second thread uses a second
core (unfold 0.68-0.79x the wall time with two workers on 2 cores, bench/bench_lge_chains.py).
Work made of many small operations gains nothing: MOCO's per-repeat registrations (transforms of
144×192 images, scipy.fft's real transforms holding the GIL) took the same wall time on two
threads at 1.27x the CPU, so they stay a loop. The process holds ONE
pool, shared by every connection, of ``workers − 1`` threads (``CMRECON_WORKERS``,
:mod:`cmrecon.runtime`; default: the cores this process may run on); the calling thread works
too, so a call never waits for a pool thread that another connection keeps busy: it takes the
items nobody has started and waits only for those in progress. With many connections at once
the cores are shared, not oversubscribed beyond ``workers`` threads of this kind.

Results are those of the serial loop, in order, bit for bit: each item is computed by the same
code on the same inputs (BLAS stays at its one thread per call, runtime's policy); an error is
the one the serial loop would have raised first (the lowest failing index), after the items
already running have finished. A call from inside a worker runs serially (no nesting).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_local = threading.local()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def workers() -> int:
    """Compute workers per process: ``runtime.current().workers``, 0 meaning :func:`available_cores`."""
    from cmrecon.runtime import current
    n = current().workers
    return n if n > 0 else available_cores()


def _shared_pool(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < threads:
            # grown, never shrunk: an old pool finishes what it holds and its threads exit
            old, _pool = _pool, ThreadPoolExecutor(threads, thread_name_prefix="cmrecon-worker")
            _pool_size = threads
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _forget_pool_in_child() -> None:
    """A forked child has none of the parent's pool threads: it starts its own when it needs one."""
    global _pool, _pool_size, _lock
    _pool, _pool_size, _lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def pmap(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, the items spread over the compute workers (module notes).

    Parameters
    ----------
    fn : a function of one item; it must not change state another item reads.
    items : the items (consumed into a list first).

    Returns
    -------
    list, in the order of ``items``.
    """
    items = list(items)
    n = len(items)
    k = min(workers(), n)
    if k <= 1 or getattr(_local, "inside", False):
        return [fn(x) for x in items]
    results: list = [None] * n
    errors: list[tuple[int, BaseException]] = []
    state = {"next": 0, "running": 0}
    cond = threading.Condition()

    def drain() -> None:
        outer = getattr(_local, "inside", False)
        _local.inside = True
        try:
            while True:
                with cond:
                    if errors or state["next"] >= n:
                        return
                    i = state["next"]
                    state["next"] += 1
                    state["running"] += 1
                try:
                    results[i] = fn(items[i])
                except BaseException as exc:   # re-raised in the caller, lowest index first
                    with cond:
                        errors.append((i, exc))
                finally:
                    with cond:
                        state["running"] -= 1
                        cond.notify_all()
        finally:
            _local.inside = outer

    pool = _shared_pool(k - 1)
    for _ in range(k - 1):
        pool.submit(drain)
    drain()
    with cond:   # the caller found nothing left to start: wait for those still running
        while state["running"]:
            cond.wait()
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
    return results
