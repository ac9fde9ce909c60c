"""cmrecon.parallel.pmap: the serial loop's results and errors, on the shared compute workers.

The numerics it spreads are checked bit for bit with one and two workers where they live
(tests/recon/test_unfold.py, tests/recon/test_moco.py).
"""

from __future__ import annotations

import threading
import time

import pytest

from cmrecon import parallel, runtime
from cmrecon.parallel import pmap


@pytest.fixture
def workers(monkeypatch):
    def use(n: int) -> None:
        monkeypatch.setattr(runtime, "_configured", runtime.Settings(workers=n))
    return use


def test_results_in_order_and_computed_on_more_than_one_thread(workers):
    workers(2)
    seen = set()

    def f(x):
        seen.add(threading.get_ident())
        time.sleep(0.02)   # long enough that the pool thread takes some items
        return x * x
    assert pmap(f, range(12)) == [x * x for x in range(12)]
    assert len(seen) == 2


def test_one_worker_is_the_plain_loop_in_the_calling_thread(workers):
    workers(1)
    me = threading.get_ident()
    assert pmap(lambda x: threading.get_ident() == me, range(4)) == [True] * 4


def test_the_lowest_failing_index_is_raised_and_later_items_are_not_started(workers):
    workers(2)
    started = []

    def f(x):
        started.append(x)
        time.sleep(0.01)
        if x in (3, 5):
            raise ValueError(f"item {x}")
        return x
    with pytest.raises(ValueError, match="item 3"):
        pmap(f, range(40))
    assert len(started) < 40


def test_nested_calls_run_serially_inside_a_worker(workers):
    workers(2)
    inner = pmap(lambda x: pmap(lambda y: (threading.get_ident(), y), range(3)), range(4))
    for rows in inner:   # each inner call ran on one thread: the one that ran its outer item
        assert len({t for t, _ in rows}) == 1 and [y for _, y in rows] == [0, 1, 2]


def test_a_busy_pool_does_not_hold_the_caller(workers):
    """Another connection keeps the shared pool thread busy: the caller does every item itself."""
    workers(2)
    release = threading.Event()
    pool = parallel._shared_pool(1)
    blocker = pool.submit(release.wait, 30)
    try:
        t0 = time.monotonic()
        assert pmap(lambda x: x + 1, range(5)) == [1, 2, 3, 4, 5]
        assert time.monotonic() - t0 < 5.0
    finally:
        release.set()
        blocker.result()


def test_a_forked_child_gets_its_own_pool(workers):
    """A child forked after the parent's pool started (training workers, subprocess pools) still
    spreads its work and returns: it must not submit to the parent's threads, which it lacks.
    """
    import multiprocessing as mp
    workers(2)
    pmap(lambda x: x, range(4))   # the parent's pool exists now
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as p:
        assert p.apply(_child_work) == (list(range(1, 9)), 2)


def _child_work():
    seen = set()

    def f(x):
        seen.add(threading.get_ident())
        time.sleep(0.02)
        return x + 1
    return pmap(f, range(8)), len(seen)
