"""Serving models: one shared, verified model per process, batches, CUDA out-of-memory fallback.

* :func:`get_model` — a process-wide cache keyed by ``(weights file, sha256, device)``: the
  weights a chain names are checked against the allowed ones
  (:func:`cmrecon.models.shipped.resolve_chain_weights`), then the model is loaded
  (sha256-verified before anything is deserialised), moved to its device, put in eval mode and
  (PSIRNet) warmed up **once**, and shared by every connection of the server. The cache's lock
  is held only to look up or record an entry: the hashing and loading run outside it, and a
  session asking for weights that are still loading waits for that one load (one per key),
  so a slow load never stalls sessions using other weights. Each cached model has its own lock
  so one forward pass runs at a time per model.
* :func:`run_with_fallback` — run slices in batches; a CUDA out-of-memory error halves the
  batch, and at batch 1 hands the slice to a fallback (the CPU copy of the model) instead of
  losing it.
* :func:`infer_slices` — PSIRNet inputs (:class:`cmrecon.models.adapter.SliceInput`) through a
  cached model, batched by shape.

References
----------
PSIRNet: arXiv 2604.08781; github.com/microsoft/psirnet (MIT).
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch

from cmrecon.errors import StepError
from cmrecon.models.adapter import SliceInput, SliceOutput, forward_batch
from cmrecon.models.device import resolve_device
from cmrecon.models.psirnet import PSIRNet

__all__ = ["CachedModel", "clear_cache", "get_model", "infer_slices", "run_with_fallback"]

log = logging.getLogger("cmrecon.models.serving")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class CachedModel:
    """A loaded, warmed-up model shared by all connections of a process.

    Attributes
    ----------
    model : torch.nn.Module
        In eval mode on ``device``; ``forward(ir_kspace, pd_kspace, mask, sens_maps)``.
    device : torch.device
    weights : str
        What was asked for (a shipped name or a path).
    path : Path
        The checkpoint file.
    sha256 : str
        Its verified digest.
    preset : str
        Architecture preset used if the file is TorchScript (the CPU fallback loads the same).
    config : dict
        Constructor arguments of the model.
    min_matrix : int
        Smallest RO and PE the model accepts (``2 ** (pools + 1)``: the coarsest U-Net level
        keeps at least 2×2 pixels for its instance norm; at least the head's window).
    lock : threading.Lock
        Held during a forward pass.
    """

    model: torch.nn.Module
    device: torch.device
    weights: str
    path: Path
    sha256: str
    config: Dict[str, Any]
    min_matrix: int
    preset: str = "published"
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Loading:
    """One load in progress: its outcome, once :meth:`finish` has been called."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._entry: Optional[CachedModel] = None
        self._error: Optional[BaseException] = None

    def finish(self, entry: Optional[CachedModel], error: Optional[BaseException] = None) -> None:
        self._entry, self._error = entry, error
        self._done.set()

    def wait(self) -> CachedModel:
        """The loaded model, or the loader's error raised here too."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._entry is not None
        return self._entry


CacheKey = Tuple[str, str, str]
_CACHE: Dict[CacheKey, CachedModel] = {}
#: Loads in progress: the first session asking for a key loads it, later ones wait for it.
_LOADING: Dict[CacheKey, _Loading] = {}
#: Guards _CACHE and _LOADING only; never held while a file is read or a model is built.
_CACHE_LOCK = threading.Lock()


def _min_matrix(config: Dict[str, Any]) -> int:
    pools = max(int(config.get("pools", 4)), int(config.get("sens_pools", 4)))
    return max(2 ** (pools + 1), int(config.get("window_px", 7)))


def _warm_up(entry: CachedModel) -> None:
    """One small forward pass (allocator, kernels, lazy init) before the first real slice."""
    g = torch.Generator().manual_seed(0)
    n = entry.min_matrix * 2
    shape = (1, 4, n, n)
    k = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    maps = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = torch.ones(1, 1, n, n, dtype=torch.bool)
    with torch.inference_mode():
        entry.model(*(t.to(entry.device) for t in (k, k, mask, maps)))


def get_model(weights: str, device: str = "auto", warm_up: bool = True, preset: str = "published",
              sha256: str = "") -> CachedModel:
    """The process-wide model for ``weights`` on ``device``, loaded once (thread-safe).

    Parameters
    ----------
    weights : str
        A name in :data:`cmrecon.models.shipped.SHIPPED` (digest from the registry), or a path
        inside the weights folders (:func:`cmrecon.models.shipped.weights_folders`) to a
        :func:`~cmrecon.models.weights.save_checkpoint` file (digest from its sidecar) or to a
        TorchScript PSIRNet such as the published ``PSIRNet.pt`` (detected; built with
        ``preset``; digest from ``sha256`` or its ``.sha256`` sidecar).
    preset : str
        :data:`cmrecon.models.psirnet.PRESETS` name of a TorchScript file's architecture.
    sha256 : str
        Digest a weights file must have ("" = the registry's or the sidecar's).
    device : {"auto", "cpu", "cuda"}
    warm_up : bool
        Run one small forward pass right after loading.

    Returns
    -------
    CachedModel
        The same object for every call with the same file, digest and device.

    Raises
    ------
    StepError
        CUDA asked for but absent.
    WeightsError, ChecksumMismatchError
        Weights that are neither shipped nor inside a weights folder (one message, whether the
        file exists or not), no digest to verify against, digest mismatch. A failed load is not
        cached: every session that waited for it gets its error, the next one tries again.
    """
    from cmrecon.models.shipped import resolve_chain_weights
    from cmrecon.runtime import apply_torch_threads
    apply_torch_threads()   # the process's torch thread policy, once, now that torch is in use
    dev = resolve_device(device)
    path, expected = resolve_chain_weights(weights)
    expected = sha256.lower() or expected
    key = (str(path), expected or "", str(dev))
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is not None:
            return entry
        pending = _LOADING.get(key)
        mine = pending is None
        if mine:
            pending = _LOADING[key] = _Loading()
    if not mine:
        return pending.wait()   # the same weights, loading for another session: wait for that
    try:
        entry = _load(weights, path, expected, preset, dev, warm_up)
    except BaseException as exc:
        with _CACHE_LOCK:
            if _LOADING.get(key) is pending:
                del _LOADING[key]
        pending.finish(None, exc)
        raise
    with _CACHE_LOCK:
        if _LOADING.get(key) is pending:   # not forgotten by clear_cache meanwhile
            del _LOADING[key]
            _CACHE[key] = entry
    pending.finish(entry)
    return entry


def _load(weights: str, path: Path, expected: Optional[str], preset: str, dev: torch.device,
          warm_up: bool) -> CachedModel:
    """Verify, load, and (PSIRNet) warm up the model in ``path`` (no lock held)."""
    from cmrecon.models.weights import load_verified
    loaded = load_verified(path, expected, preset, dev)
    entry = CachedModel(model=loaded.model.eval(), device=dev, weights=str(weights), path=path,
                        sha256=loaded.sha256, config=dict(loaded.config),
                        min_matrix=_min_matrix(loaded.config), preset=preset)
    if warm_up and isinstance(entry.model, PSIRNet):
        _warm_up(entry)
    log.info("loaded weights %s (sha256 %s…) on %s", path.name, loaded.sha256[:12], dev)
    return entry


def clear_cache() -> None:
    """Forget every cached model (tests; frees GPU memory when nothing else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _LOADING.clear()   # loads in flight still answer their waiters, but are not cached
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _free_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_fallback(items: Sequence[T], run: Callable[[Sequence[T]], List[R]],
                      batch_size: int, fallback: Optional[Callable[[Sequence[T]], List[R]]] = None,
                      logger: Optional[logging.Logger] = None) -> List[R]:
    """Run ``items`` through ``run`` in batches, shrinking the batch on CUDA out-of-memory.

    On :class:`torch.cuda.OutOfMemoryError` the CUDA cache is emptied and the same items are
    retried with half the batch; once a single item does not fit, it goes to ``fallback``
    (the CPU model) and the next items are tried on ``run`` again with batch 1.

    Parameters
    ----------
    items : sequence
        Work items (e.g. :class:`SliceInput`), all compatible for batching.
    run : callable
        ``run(chunk) -> list`` of one result per item of ``chunk``.
    batch_size : int
        Items per call at first (≥ 1).
    fallback : callable, optional
        ``fallback([item]) -> [result]`` for an item that does not fit at batch 1.
    logger : logging.Logger, optional

    Returns
    -------
    list
        One result per item, in order.

    Raises
    ------
    StepError
        An item does not fit at batch 1 and there is no fallback.
    """
    lg = logger or log
    if batch_size < 1:
        raise StepError(f"batch_slices = {batch_size} must be >= 1")
    out: List[R] = []
    i, bs = 0, int(batch_size)
    while i < len(items):
        chunk = items[i:i + bs]
        try:
            res = run(chunk)
        except torch.cuda.OutOfMemoryError as exc:
            _free_cuda()
            if bs > 1:
                bs = max(1, bs // 2)
                lg.warning("psirnet: CUDA out of memory at batch %d; retrying with batch %d",
                           len(chunk), bs)
                continue
            if fallback is None:
                raise StepError(f"psirnet: CUDA out of memory for a single slice and no CPU "
                                f"fallback: {exc}") from exc
            lg.warning("psirnet: CUDA out of memory for a single slice; running it on the CPU")
            res = fallback(chunk)
        if len(res) != len(chunk):
            raise StepError(f"psirnet: {len(res)} results for {len(chunk)} slices")
        out.extend(res)
        i += len(chunk)
    return out


def infer_slices(entry: CachedModel, inputs: Sequence[SliceInput], batch_size: int = 4,
                 logger: Optional[logging.Logger] = None) -> List[SliceOutput]:
    """Reconstruct slices with a cached model: batches of equal shape, OOM → smaller → CPU.

    Parameters
    ----------
    entry : CachedModel
        From :func:`get_model`.
    inputs : sequence of SliceInput
    batch_size : int
        Slices per forward pass (slices of different shapes never share one).

    Returns
    -------
    list of SliceOutput
        In the order of ``inputs``.
    """
    results: List[Optional[SliceOutput]] = [None] * len(inputs)
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, s in enumerate(inputs):
        groups.setdefault(s.shape, []).append(i)

    def run(chunk: Sequence[SliceInput]) -> List[SliceOutput]:
        with entry.lock:
            return forward_batch(entry.model, entry.device, chunk)

    fallback = None
    if entry.device.type == "cuda":
        def fallback(chunk: Sequence[SliceInput]) -> List[SliceOutput]:
            cpu = get_model(entry.weights, "cpu", preset=entry.preset, sha256=entry.sha256)
            with cpu.lock:
                return forward_batch(cpu.model, cpu.device, chunk)

    for idx in groups.values():
        outs = run_with_fallback([inputs[i] for i in idx], run, batch_size, fallback, logger)
        for i, o in zip(idx, outs):
            results[i] = o
    return results  # type: ignore[return-value]
