"""BLAS thread policy for streaming reconstruction.

Chain steps make many small numpy products (one 16×16 by 16×N matrix product per readout in
``noise_prewhiten``). Multithreaded OpenBLAS spins its worker threads for each of them: on a
2-core machine whose cores are busy (other connections, torch's own threads) that made
prewhitening 80× slower (0.06 s → 4.9 s per slice, bench/bench_lge_chains.py). Parallelism in
cmrecon comes from concurrent connections and torch's intra-op pool instead, so the first chain
run in a process (``run_chain``, or a step Gadgetron starts as an external Python gadget) limits BLAS to ``CMRECON_BLAS_THREADS`` threads (default 1; 0 leaves BLAS as
the libraries set it) through threadpoolctl, which finds numpy's and scipy's bundled BLAS.
"""

from __future__ import annotations

import os
import threading

from cmrecon.errors import CmreconError

ENV = "CMRECON_BLAS_THREADS"
_lock = threading.Lock()
_applied = False


def parse_blas_threads(value: str | None) -> int:
    """Thread count from the environment value: unset or empty → 1; must be an integer ≥ 0."""
    if value is None or not value.strip():
        return 1
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise CmreconError(f"{ENV}={value!r}: expected a whole number of BLAS threads "
                           "(0 leaves BLAS threading as the libraries set it)")
    return n


def limit_blas_threads() -> None:
    """Apply the BLAS thread policy once per process (idempotent, thread-safe)."""
    global _applied
    if _applied:
        return
    with _lock:
        if _applied:
            return
        n = parse_blas_threads(os.environ.get(ENV))
        if n:
            from threadpoolctl import threadpool_limits
            threadpool_limits(limits=n, user_api="blas")
        _applied = True
