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
#: torch intra-op threads of the learned steps (default 1: on a busy 2-core machine the
#: shipped model ran 26 s/slice with torch's default threads and 4 s with one)
TORCH_ENV = "CMRECON_TORCH_THREADS"
_lock = threading.Lock()
_applied = False
_torch_applied = False


def parse_blas_threads(value: str | None, name: str = ENV) -> int:
    """Thread count from the environment value: unset or empty → 1; must be an integer ≥ 0."""
    if value is None or not value.strip():
        return 1
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise CmreconError(f"{name}={value!r}: expected a whole number of threads "
                           "(0 leaves threading as the libraries set it)")
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


def limit_torch_threads() -> int:
    """Apply ``CMRECON_TORCH_THREADS`` (default 1; 0 = torch's own default) once per process.

    Called by the learned steps when they first load a model (torch is imported only then).
    Returns the thread count torch now uses.
    """
    global _torch_applied
    import torch
    with _lock:
        if not _torch_applied:
            n = parse_blas_threads(os.environ.get(TORCH_ENV), TORCH_ENV)
            if n:
                torch.set_num_threads(n)
            _torch_applied = True
    return torch.get_num_threads()


def set_threads(n: int) -> None:
    """Process entry (``--threads N``): BLAS and torch threads for this process and its children.

    Sets ``CMRECON_BLAS_THREADS`` and ``CMRECON_TORCH_THREADS`` before any chain or model runs.
    """
    if n < 0:
        raise CmreconError(f"--threads {n}: expected a whole number >= 0 (0 = the libraries' defaults)")
    os.environ[ENV] = str(n)
    os.environ[TORCH_ENV] = str(n)
