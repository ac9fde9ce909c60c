"""Serving the PSIRNet-style model: one shared model per process, slice inputs, OOM fallback.

* :func:`get_model` — a process-wide cache keyed by ``(weights file, sha256, device)``: the
  model is loaded (sha256-verified), moved to its device, put in eval mode and warmed up
  **once**, then shared by every connection of the server; creation is guarded by a lock,
  and each cached model has its own lock so one forward pass runs at a time per model.
* :func:`prepare_slice` — an :class:`~cmrecon.recon.irpd.IrPdSlice` (after ``coil_maps``) →
  :class:`SliceInput`: one repeat (the key frame, as the published pipeline
  chooses its input, or a given one), transposed from the buffer's
  ``(coils, ky, kx)`` to the model's ``(coils, RO, PE)``; out-of-range input is a
  :class:`~cmrecon.errors.StepError`.
* :func:`run_with_fallback` — run slices in batches; a CUDA out-of-memory error halves the
  batch, and at batch 1 hands the slice to a fallback (the CPU copy of the model) instead of
  losing it.
* :func:`psirnet_images` — the model's forward pass that also returns the final IR/PD images,
  so MagIR (``|IR|·a``) and the display-window mask come from the same reconstruction.

References
----------
PSIRNet: arXiv 2604.08781; github.com/microsoft/psirnet (MIT).
Sriram A et al. MICCAI 2020 (E2E VarNet); Kellman P et al. MRM 2002;47:372 (PSIR, SCC).
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
import torch

from cmrecon.errors import StepError
from cmrecon.models.psirnet import PSIRNet
from cmrecon.models.sense import ifft2c, reduce
from cmrecon.recon.psir_head import psir_head_tensor, surface_coil_correction_map

__all__ = ["CachedModel", "SliceInput", "SliceOutput", "clear_cache", "get_model",
           "infer_slices", "prepare_slice", "psirnet_images", "resolve_device",
           "run_with_fallback"]

log = logging.getLogger("cmrecon.models.inference")

T = TypeVar("T")
R = TypeVar("R")


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when CUDA is available, else ``cpu``; ``cuda`` without CUDA is a StepError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StepError("device = 'cuda' but no CUDA device is available (use auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise StepError(f"device = {name!r}; one of auto, cpu, cuda")
    return torch.device(name)


# --- model cache --------------------------------------------------------------------------------

class UnsupportedInput(StepError):
    """An input outside what the model was trained for (coils, matrix): the step may fall back."""


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
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: Dict[Tuple[str, str, str], CachedModel] = {}
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
        A name in :data:`cmrecon.models.shipped.SHIPPED` (digest from the registry), a path to
        a :func:`~cmrecon.models.weights.save_checkpoint` file (digest from its sidecar), or a
        path to a TorchScript PSIRNet such as the published ``PSIRNet.pt`` (detected; built
        with ``preset``; digest from ``sha256`` or its ``.sha256`` sidecar).
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
        Unknown name, missing file, digest mismatch.
    """
    from cmrecon.models.shipped import resolve_weights
    from cmrecon.models.weights import is_torchscript, load_checkpoint, load_published_verified

    from cmrecon.threads import limit_torch_threads
    limit_torch_threads()   # CMRECON_TORCH_THREADS (default 1), once per process
    dev = resolve_device(device)
    path, expected = resolve_weights(weights)
    expected = sha256.lower() or expected
    key = (str(path.resolve()), expected or "", str(dev))
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is not None:
            return entry
        loaded = (load_published_verified(path, expected, preset, dev) if is_torchscript(path)
                  else load_checkpoint(path, expected_sha256=expected, map_location=dev))
        entry = CachedModel(model=loaded.model.eval(), device=dev, weights=str(weights),
                            path=path, sha256=loaded.sha256, config=dict(loaded.config),
                            min_matrix=_min_matrix(loaded.config))
        if warm_up:
            _warm_up(entry)
        _CACHE[key] = entry
        log.info("loaded PSIRNet weights %s (sha256 %s…) on %s", path.name, loaded.sha256[:12], dev)
        return entry


def clear_cache() -> None:
    """Forget every cached model (tests; frees GPU memory when nothing else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- slice input / output -----------------------------------------------------------------------

@dataclass
class SliceInput:
    """One IR/PD pair in the model's layout (numpy, CPU).

    Attributes
    ----------
    ir_kspace, pd_kspace : (coils, RO, PE) complex64
        Prewhitened k-space, zero where not sampled.
    mask : (1, RO, PE) bool
    sens_maps : (coils, RO, PE) complex64
    repeat : int
        Position (into the slice's ``repeats``) of the repeat used.
    """

    ir_kspace: np.ndarray
    pd_kspace: np.ndarray
    mask: np.ndarray
    sens_maps: np.ndarray
    repeat: int

    @property
    def shape(self) -> Tuple[int, ...]:
        """``(coils, RO, PE)``: slices batch together only when this matches."""
        return tuple(self.ir_kspace.shape)


@dataclass
class SliceOutput:
    """The model's reconstruction of one slice, in the buffer's image layout ``(y, x) = (PE, RO)``.

    Attributes
    ----------
    psir : (y, x) float32
        Surface-coil-corrected PSIR (dimensionless IR/PD ratio).
    magir : (y, x) float32
        ``|IR|·a`` with the head's SCC map ``a``.
    pd : (y, x) complex64
        The reconstructed PD image, SNR units (display-window mask).
    scc : (y, x) float32
        SCC map ``a``, 1/SNR units.
    phase : (y, x) complex64
        Unit-modulus PD phase used by the head.
    """

    psir: np.ndarray
    magir: np.ndarray
    pd: np.ndarray
    scc: np.ndarray
    phase: np.ndarray


def _zero_filled_images(kspace: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``(n, coils, ky, kx)`` k-space → ``(n, ky, kx)`` maps-combined zero-filled images."""
    from cmrecon.recon.fft import ifft2c as np_ifft2c
    return np.sum(np.conj(maps)[None] * np_ifft2c(kspace), axis=1)


def prepare_slice(sl: Any, repeat: int = -1, roi_fraction: float = 0.5,
                  min_coils: int = 2, max_coils: int = 64, min_matrix: int = 16,
                  use_acs: bool = True) -> SliceInput:
    """Turn a buffered IR/PD slice with coil maps into the model's input.

    Parameters
    ----------
    sl : IrPdSlice
        After ``buffer_ir_pd`` and ``coil_maps``: ``ir_kspace``/``pd_kspace``
        ``(repeats, coils, ky, kx)`` complex64, ``mask_pe`` ``(ky,)`` bool, ``maps``
        ``(coils, ky, kx)`` complex64.
    repeat : int
        Position of the repeat to use; -1 = the key frame of the zero-filled IR images
        (:func:`cmrecon.recon.moco.key_frame`, the function every LGE chain uses; the
        published choice of the input repeat).
    roi_fraction : float
        Region of that comparison (fraction of each axis; the default of the classical
        ``psir`` step, so both single-repeat chains choose alike).
    min_coils, max_coils : int
        Accepted coil counts.
    min_matrix : int
        Smallest accepted RO and PE (:attr:`CachedModel.min_matrix`).
    use_acs : bool
        Fill the chosen repeat's own calibration-only rows (embedded ACS lines off the
        acceleration grid, ``acs_repeats``) into the input and its mask, as in the single shot
        the shipped model was trained on. Separate-shot calibration (own heartbeats, own
        contrast and position) never enters the input: those rows are synthesised from the
        chosen heartbeat by GRAPPA instead.

    Returns
    -------
    SliceInput

    Raises
    ------
    StepError
        Missing PD or IR k-space, missing coil maps, coil count or matrix out of range, a
        repeat index out of range.
    """
    from cmrecon.recon import irpd

    where = f"slice {getattr(sl, 'slice', '?')}"
    if sl.pd_kspace is None:
        raise StepError(f"{where}: psirnet_recon needs the PD (set 1) k-space; it is missing "
                        f"(put psirnet_recon after buffer_ir_pd and coil_maps, before unfold)")
    if sl.ir_kspace is None:
        raise StepError(f"{where}: psirnet_recon needs the IR (set 0) k-space; it is missing "
                        f"(put psirnet_recon after buffer_ir_pd and coil_maps, before unfold)")
    if sl.maps is None:
        raise StepError(f"{where}: psirnet_recon needs coil maps; put coil_maps before it")
    ir_all, pd_all = np.asarray(sl.ir_kspace), np.asarray(sl.pd_kspace)
    if ir_all.ndim != 4 or ir_all.shape != pd_all.shape:
        raise StepError(f"{where}: IR k-space {ir_all.shape} and PD k-space {pd_all.shape} must "
                        f"both be (repeats, coils, ky, kx)")
    n_rep, coils, ky, kx = ir_all.shape
    if not min_coils <= coils <= max_coils:
        raise UnsupportedInput(f"{where}: {coils} coils is outside the accepted {min_coils}..{max_coils}")
    if min(ky, kx) < min_matrix:
        raise UnsupportedInput(f"{where}: matrix (RO {kx}, PE {ky}) is smaller than {min_matrix} pixels, "
                        f"the least the model's U-Net pooling accepts")
    if sl.maps.shape != (coils, ky, kx):
        raise StepError(f"{where}: coil maps {sl.maps.shape} do not match k-space "
                        f"{(coils, ky, kx)}")
    if repeat == -1:
        if n_rep == 1:
            k = 0
        else:
            imgs = _zero_filled_images(ir_all, sl.maps)
            k = irpd.key_frame(imgs, roi_fraction)
    elif 0 <= repeat < n_rep:
        k = repeat
    else:
        raise StepError(f"{where}: repeat = {repeat} is outside the {n_rep} repeats "
                        f"(0..{n_rep - 1}, or -1 for automatic)")
    rows = np.asarray(sl.mask_pe, bool).copy()
    ir_k = np.where(rows[None, :, None], ir_all[k], 0).astype(np.complex64)  # (coils, ky, kx)
    pd_k = np.where(rows[None, :, None], pd_all[k], 0).astype(np.complex64)
    own = getattr(sl, "acs_repeats", None)
    if use_acs and own is not None and own.shape[-1] == kx:
        # embedded ACS: the calibration-only rows (off the R grid) of the chosen heartbeats
        # themselves (same contrast and position). The network was trained with the whole shot
        # (ACS included) as its input. Separate-shot calibration (own heartbeats, own contrast
        # and position) never enters the input: it only calibrates the coil maps.
        acs_rows = np.asarray(sl.acs_rows, int)
        extra = [j for j, r in enumerate(acs_rows) if 0 <= r < ky and not rows[r]]
        if extra:
            ir_k[:, acs_rows[extra]] = own[0, k][:, extra]
            pd_k[:, acs_rows[extra]] = own[1, k][:, extra]
            rows[acs_rows[extra]] = True
    elif use_acs and sl.acs is not None and sl.acceleration > 1:
        # separate-shot calibration: the heartbeat itself has no ACS rows. Synthesise the rows
        # an embedded shot would carry from the heartbeat's own imaging rows (GRAPPA weights
        # fitted on the calibration block), so the input has the layout the model knows.
        from cmrecon.recon.grappa import grappa_fill, grappa_weights
        acs_rows = np.asarray(sl.acs_rows, int)
        extra = np.array([r for r in acs_rows if 0 <= r < ky and not rows[r]], int)
        if extra.size and sl.acs.shape[-1] == kx:
            try:
                w = grappa_weights(sl.acs, int(sl.acceleration))
            except ValueError as exc:
                raise StepError(f"{where}: the calibration block cannot fit GRAPPA weights for "
                                f"the model's input: {exc}") from exc
            ir_k[:, extra] = grappa_fill(ir_k, rows, None, int(sl.acceleration), weights=w)[:, extra]
            pd_k[:, extra] = grappa_fill(pd_k, rows, None, int(sl.acceleration), weights=w)[:, extra]
            rows[extra] = True
    mask = np.broadcast_to(rows[None, None, :], (1, kx, ky)).copy()          # (1, RO, PE)
    to_model = lambda a: np.ascontiguousarray(np.swapaxes(a, -1, -2)).astype(np.complex64)  # noqa: E731
    ir = to_model(ir_k)
    pd = to_model(pd_k)
    return SliceInput(ir_kspace=ir, pd_kspace=pd, mask=mask, sens_maps=to_model(sl.maps),
                      repeat=int(k))


# --- forward ------------------------------------------------------------------------------------

def psirnet_images(model: torch.nn.Module, ir_kspace: torch.Tensor, pd_kspace: torch.Tensor,
                   mask: torch.Tensor, sens_maps: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward pass returning PSIR plus MagIR, the PD image, the SCC map and the PD phase.

    For a :class:`~cmrecon.models.psirnet.PSIRNet` this is :meth:`PSIRNet.forward` step for
    step (so ``psir`` equals ``model(...)``) keeping the final IR and PD images. Any other
    module (e.g. a TorchScript checkpoint) gives only its PSIR; MagIR is then ``|PSIR|`` and
    the PD image the zero-filled coil combination.

    Parameters
    ----------
    ir_kspace, pd_kspace : ``(B, coils, RO, PE)`` complex64; mask ``(B, 1, RO, PE)`` bool;
    sens_maps ``(B, coils, RO, PE)`` complex64.

    Returns
    -------
    psir, magir : ``(B, 1, RO, PE)`` float32
    pd : ``(B, 1, RO, PE)`` complex64
    scc : ``(B, 1, RO, PE)`` float32
    phase : ``(B, 1, RO, PE)`` complex64
    """
    if isinstance(model, PSIRNet):
        sens = model.sens_net(sens_maps)
        ir = reduce(ifft2c(ir_kspace), sens)
        pd = reduce(ifft2c(pd_kspace), sens)
        for cascade in model.cascades:
            ir, pd = cascade(ir, pd, ir_kspace, pd_kspace, mask, sens)
        psir = psir_head_tensor(ir, pd, model.window_px, model.reg, model.eps)
        window, reg, eps = model.window_px, model.reg, model.eps
        mag_ir = ir.abs()
    else:
        psir = model(ir_kspace, pd_kspace, mask, sens_maps).float()
        pd = reduce(ifft2c(pd_kspace), sens_maps)
        window, reg, eps = 7, 16.0, 1e-6
        mag_ir = psir.abs()
    pd_mag = pd.abs()
    scc = surface_coil_correction_map(pd_mag, window, reg)
    magir = mag_ir * scc if isinstance(model, PSIRNet) else mag_ir
    phase = pd / torch.sqrt(torch.clamp(pd_mag ** 2, min=eps))
    return psir, magir, pd, scc, phase


def _forward_batch(entry_model: torch.nn.Module, device: torch.device,
                   inputs: Sequence[SliceInput]) -> List[SliceOutput]:
    stack = lambda name: torch.from_numpy(np.stack([getattr(s, name) for s in inputs])).to(device)  # noqa: E731
    with torch.inference_mode():
        psir, magir, pd, scc, phase = psirnet_images(
            entry_model, stack("ir_kspace"), stack("pd_kspace"), stack("mask"),
            stack("sens_maps"))
    to_img = lambda t, i, dt: np.ascontiguousarray(t[i, 0].T.cpu().numpy()).astype(dt)  # noqa: E731
    return [SliceOutput(psir=to_img(psir, i, np.float32), magir=to_img(magir, i, np.float32),
                        pd=to_img(pd, i, np.complex64), scc=to_img(scc, i, np.float32),
                        phase=to_img(phase, i, np.complex64)) for i in range(len(inputs))]


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
            return _forward_batch(entry.model, entry.device, chunk)

    fallback = None
    if entry.device.type == "cuda":
        def fallback(chunk: Sequence[SliceInput]) -> List[SliceOutput]:
            cpu = get_model(str(entry.path), "cpu") if entry.weights == str(entry.path) else \
                get_model(entry.weights, "cpu")
            with cpu.lock:
                return _forward_batch(cpu.model, cpu.device, chunk)

    for idx in groups.values():
        outs = run_with_fallback([inputs[i] for i in idx], run, batch_size, fallback, logger)
        for i, o in zip(idx, outs):
            results[i] = o
    return results  # type: ignore[return-value]
