"""Process settings, built once at process entry (flags, then environment), and their policies.

Thread policy. Chain steps make many small numpy products (one 16×16 by 16×N matrix product per
readout in ``noise_prewhiten``). Multithreaded OpenBLAS spins its worker threads for each of
them: on a 2-core machine whose cores are busy (other connections, torch's own threads) that
made prewhitening 80× slower (0.06 s → 4.9 s per slice, bench/bench_lge_chains.py), and the
shipped model ran 26 s/slice with torch's default threads and 4 s with one. Parallelism in
cmrecon comes from concurrent connections and, within a slice, from a slice's independent
pieces (GRAPPA batches) on the process's compute workers
(:mod:`cmrecon.parallel`, ``CMRECON_WORKERS``, a thread per core by default), so each process entry (``cmrecon``'s main,
a step Gadgetron starts as an external Python gadget) calls :func:`configure` once: BLAS is
limited at once (threadpoolctl finds numpy's and scipy's bundled BLAS); torch's intra-op threads
are set when the first model loads (:func:`apply_torch_threads`), so classical chains never
import torch. BLAS libraries loaded after the entry (scipy's own OpenBLAS comes with the first
``scipy.linalg`` import) take the same count from ``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS``,
which :func:`configure` sets. Library calls (``run_chain`` in a notebook) change nothing.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from cmrecon.errors import CmreconError

BLAS_ENV = "CMRECON_BLAS_THREADS"
TORCH_ENV = "CMRECON_TORCH_THREADS"
WORKERS_ENV = "CMRECON_WORKERS"
#: what OpenBLAS (numpy's and scipy's bundled copies) and MKL read when they load
BLAS_LIBRARY_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
WEIGHTS_PATH_ENV = "CMRECON_WEIGHTS_PATH"
_lock = threading.Lock()
_configured: "Settings | None" = None
_torch_applied = False


def parse_threads(value: str | None, name: str = BLAS_ENV, unset: int = 1,
                  zero: str = "0 leaves threading as the libraries set it") -> int:
    """Thread count from an environment value: unset or empty → ``unset``; must be an integer ≥ 0."""
    if value is None or not value.strip():
        return unset
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise CmreconError(f"{name}={value!r}: expected a whole number of threads ({zero})")
    return n


def parse_folders(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Absolute folders from an ``os.pathsep``-separated string (or a sequence of them).

    Empty entries are dropped (in ``PATH`` they would mean the working folder: here they mean
    nothing); relative ones are made absolute now, so a later ``chdir`` moves nothing.
    """
    if value is None:
        return ()
    parts = value.split(os.pathsep) if isinstance(value, str) else \
        [p for v in value for p in str(v).split(os.pathsep)]
    return tuple(os.path.abspath(os.path.expanduser(p)) for p in parts if p.strip())


@dataclass(frozen=True)
class Settings:
    """What one process runs with.

    Attributes
    ----------
    blas_threads : BLAS threads (0 = the libraries' default).
    torch_threads : torch intra-op threads (0 = torch's default).
    weights_path : absolute folders whose files a chain may name as weights, besides the shipped
        ones (:func:`cmrecon.models.shipped.resolve_chain_weights`); () = shipped weights only.
    workers : threads that share a slice's independent pieces (:mod:`cmrecon.parallel`; 0 = the
        cores this process may run on, 1 = serial).
    """

    blas_threads: int = 1
    torch_threads: int = 1
    weights_path: tuple[str, ...] = ()
    workers: int = 0

    @classmethod
    def build(cls, threads: int | None = None, environ: Mapping[str, str] | None = None,
              weights_path: str | Iterable[str] | None = None, workers: int | None = None) -> "Settings":
        """Flags first (``--threads N`` sets both, ``--weights-path DIR`` the weights folders,
        ``--workers N``), then ``CMRECON_BLAS_THREADS`` / ``CMRECON_TORCH_THREADS`` /
        ``CMRECON_WEIGHTS_PATH`` (``os.pathsep``-separated folders) / ``CMRECON_WORKERS``, then
        the defaults (1 thread, shipped weights only, a compute worker per core).

        Raises
        ------
        CmreconError
            A negative ``threads`` or ``workers``, or a malformed environment value.
        """
        env = os.environ if environ is None else environ
        if workers is None:
            workers = parse_threads(env.get(WORKERS_ENV), WORKERS_ENV, unset=0, zero="0 = one per core")
        elif workers < 0:
            raise CmreconError(f"--workers {workers}: expected a whole number >= 0 (0 = one per core)")
        folders = parse_folders(weights_path) if weights_path is not None else \
            parse_folders(env.get(WEIGHTS_PATH_ENV))
        if threads is not None:
            if threads < 0:
                raise CmreconError(f"--threads {threads}: expected a whole number >= 0 "
                                   "(0 = the libraries' defaults)")
            return cls(threads, threads, folders, workers)
        return cls(parse_threads(env.get(BLAS_ENV), BLAS_ENV), parse_threads(env.get(TORCH_ENV), TORCH_ENV),
                   folders, workers)


def configure(settings: Settings) -> Settings:
    """Process entry: adopt ``settings``, limit BLAS now, and export them to child processes."""
    global _configured
    with _lock:
        if settings.blas_threads:
            # libraries loaded later read their count from the environment when they load (scipy's
            # own OpenBLAS arrives with the first scipy.linalg import, after most entries run this);
            # threadpoolctl limits the ones already loaded
            for var in BLAS_LIBRARY_ENV:
                os.environ[var] = str(settings.blas_threads)
            from threadpoolctl import threadpool_limits
            threadpool_limits(limits=settings.blas_threads, user_api="blas")
        os.environ[BLAS_ENV] = str(settings.blas_threads)
        os.environ[TORCH_ENV] = str(settings.torch_threads)
        os.environ[WORKERS_ENV] = str(settings.workers)
        if settings.weights_path:
            os.environ[WEIGHTS_PATH_ENV] = os.pathsep.join(settings.weights_path)
        else:
            os.environ.pop(WEIGHTS_PATH_ENV, None)
        _configured = settings
    return settings


def current() -> Settings:
    """The settings :func:`configure` adopted, else those the environment gives (nothing applied)."""
    return _configured or Settings.build()


def apply_torch_threads() -> int:
    """Set torch's intra-op threads from :func:`current` once per process; return torch's count.

    Called where torch is first imported for a model (:func:`cmrecon.models.serving.get_model`).
    """
    global _torch_applied
    import torch
    with _lock:
        if not _torch_applied:
            n = current().torch_threads
            if n:
                torch.set_num_threads(n)
            _torch_applied = True
    return torch.get_num_threads()


def data_dir(env: str, package: str) -> Path:
    """A data folder: ``$env`` when set, else the installed data package ``package`` (the
    repository's folder in a checkout or an editable install, found through importlib.resources).
    """
    value = os.environ.get(env)
    if value:
        return Path(value)
    from importlib.resources import files
    return Path(str(files(package)))
