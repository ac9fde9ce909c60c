"""Cine steps: ``buffer_cine`` → ``cine_coil_maps`` → ``cine_sense`` | ``cine_lps`` |
``cine_crunet`` | ``cine_inr`` → ``emit_cine``.

Thin adapters around :mod:`cmrecon.recon.cine_buffer`, :mod:`cmrecon.recon.unfold` (coil maps),
:mod:`cmrecon.recon.cine` (SENSE, L+S), :mod:`cmrecon.recon.cine_inr` and
:mod:`cmrecon.models.crunet`; each declares the cine product (:mod:`cmrecon.products.cine`) it
consumes and produces and passes every other item through unchanged. Only ``emit_cine`` hands
on MRD items, so in Gadgetron XML the others share one ``<external target="steps">``.

Output images are ``(y, x)`` = ``(PE, RO)``, one per cardiac phase (docs/cine.md).

References
----------
Pruessmann KP et al. MRM 2001;46:638-651 (CG-SENSE). Otazo R, Candès E, Sodickson DK.
MRM 2015;73:1125-1136 (L+S). Inati SJ et al. ISMRM 2014 (coil maps).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import ismrmrd
import numpy as np

from cmrecon.axes import centre_crop, shape_yx
from cmrecon.chain.registry import Item, StepContext, register
from cmrecon.errors import StepError
from cmrecon.io.acquisitions import head_copy, is_non_imaging
from cmrecon.io.header import encoding_info
from cmrecon.io.images import auto_window, make_image
from cmrecon.products.cine import CineImages, CineKspace, CineMapped, CineSliceInfo, CoilMaps
from cmrecon.recon.buffer import acs_block
from cmrecon.recon.cine_buffer import TICK_MS, CineBuffer, CineReadout
from cmrecon.recon.unfold import calibration_block, estimate_maps
from cmrecon_gadgets.learned import allowed_weights
from cmrecon_gadgets.lge_steps import CoilMapsParams


@contextmanager
def on_cine_slice(info: CineSliceInfo, what: str) -> Iterator[None]:
    """Re-raise a numerics ``ValueError`` as a :class:`StepError` naming the slice and the step."""
    try:
        yield
    except ValueError as exc:
        raise StepError(f"cine slice {info.slice}: {what}: {exc}") from exc


def _limit_count(limits, name: str) -> int | None:
    lim = getattr(limits, name, None) if limits is not None else None
    if lim is None or lim.maximum is None:
        return None
    return int(lim.maximum) - int(lim.minimum or 0) + 1


# ----------------------------------------------------------------------------- buffer_cine


@dataclass(frozen=True)
class BufferCineParams:
    """Parameters of ``buffer_cine``."""

    expected_phases: int = field(default=0, metadata={
        "doc": "cardiac phases per slice; 0 = from the header's encoding limits of phase (when "
               "the header has none, slices are released by ACQ_LAST_IN_SLICE or at the end)"})


def _make_cine_buffer(params: BufferCineParams, ctx: StepContext) -> CineBuffer:
    if params.expected_phases < 0:
        raise StepError(f"buffer_cine expected_phases = {params.expected_phases} must be >= 0")
    info = encoding_info(ctx.header)
    enc = ctx.header.encoding[0]
    phases = params.expected_phases or _limit_count(enc.encodingLimits, "phase")
    pi = getattr(enc, "parallelImaging", None)
    accel = None
    if pi is not None and pi.accelerationFactor is not None and pi.accelerationFactor.kspace_encoding_step_1:
        accel = int(pi.accelerationFactor.kspace_encoding_step_1)
    return CineBuffer(info.encoded_matrix[1], info.center_line, info.recon_matrix, info.recon_fov_mm,
                      expected_phases=phases, acceleration=accel, budget=ctx.budget)


@register("buffer_cine", BufferCineParams, consumes=ismrmrd.Acquisition, produces=CineKspace)
def buffer_cine(items: Iterator[Item], params: BufferCineParams, ctx: StepContext) -> Iterator[Item]:
    """Collect each slice's readouts of every cardiac phase (idx.phase); emit a CineKspace per slice.

    A slice is released when ``ACQ_LAST_IN_SLICE`` arrives for its last phase, else at the end of
    the stream; released slices leave memory. Noise/navigator/dummy readouts are consumed; other
    items pass. Phases outside the header's limits, missing phases and changing coil counts are
    ``StepError``.
    """
    buf = None
    for item in items:
        if not isinstance(item, ismrmrd.Acquisition):
            yield item
            continue
        if is_non_imaging(item):
            continue
        if buf is None:
            buf = _make_cine_buffer(params, ctx)
        idx = item.idx
        calib = (item.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
                 or item.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING))
        readout = CineReadout(
            data=np.asarray(item.data), slice=int(idx.slice), phase=int(idx.phase),
            line=int(idx.kspace_encode_step_1), center_sample=int(item.center_sample),
            calibration=calib, last_in_slice=item.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE),
            trigger_ms=float(item.physiology_time_stamp[0]) * TICK_MS, ref=head_copy(item))
        for sl in buf.push(readout):
            ctx.log.info("buffer_cine: slice %d complete (%d phases, R=%d)", sl.info.slice,
                         len(sl.info.phases), sl.acceleration)
            yield sl
    if buf is not None:
        for sl in buf.flush():
            ctx.log.info("buffer_cine: slice %d released at end of stream (%d phases)",
                         sl.info.slice, len(sl.info.phases))
            yield sl


# ----------------------------------------------------------------------------- cine_coil_maps


def time_averaged_calibration(k: CineKspace) -> np.ndarray:
    """Calibration block ``(coils, ay, kx)`` from the time-averaged k-space of one slice.

    Every row is averaged over the phases that sampled it; the block is the widest run of rows
    about the centre that some phase sampled. Equispaced sampling gives the ACS rows;
    kt-interleaved sampling fills every row (the TSENSE idea), so its maps come from the
    full-resolution time average. Without such rows (R = 1 needs none) the central rows are used.

    References
    ----------
    Kellman P, Epstein FH, McVeigh ER. Adaptive sensitivity encoding incorporating temporal
    filtering (TSENSE). MRM 2001;45:846-852.
    """
    counts = k.mask.sum(axis=0)
    total = k.kspace.sum(axis=0)                              # zero where unsampled
    block, _ = acs_block(total, counts)
    mean = total / np.maximum(counts, 1)[None, :, None].astype(np.float32)
    return calibration_block(block, mean[None], counts > 0)


@register("cine_coil_maps", CoilMapsParams, consumes=CineKspace, produces=CineMapped, each=True)
def cine_coil_maps(k: CineKspace, params: CoilMapsParams, ctx: StepContext) -> CineMapped:
    """Attach unit-norm coil maps (coils, ky, kx) estimated from the time-averaged calibration rows (Inati, Walsh or ESPIRiT)."""
    with on_cine_slice(k.info, f"{params.method} coil maps"):
        calib = time_averaged_calibration(k)
        maps = estimate_maps(calib, k.kspace.shape[-2:], params.method, params.window_px,
                             params.espirit_kernel_px, params.espirit_threshold, params.espirit_crop)
    return CineMapped(k, CoilMaps(maps.astype(np.complex64), params.method))


def cine_front_chain(coil_maps: dict | None = None):
    """The shipped cine chains' front end, ending in :class:`CineMapped` products.

    ``noise_prewhiten → remove_oversampling → buffer_cine → cine_coil_maps`` (``coil_maps``:
    that step's parameters). Run it with :func:`cmrecon.chain.runner.run_chain` to get exactly
    the inputs a cine reconstruction step receives in a chain (a learned model's training data).
    """
    from cmrecon.chain.definition import build_chain
    return build_chain("cine_front", [("noise_prewhiten", {}), ("remove_oversampling", {}), ("buffer_cine", {}),
                                      ("cine_coil_maps", dict(coil_maps or {}))], ends_in_mrd=False)


# ----------------------------------------------------------------------------- reconstructions


def _recon(mk: CineMapped, method: str, ctx: StepContext,
           fn: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, dict]]) -> CineImages:
    """Run ``fn(kspace, maps, mask) -> (images (T, ky, kx), provenance)``, crop, log the time.

    The time goes to the log only: image meta stays a function of the data (golden outputs).
    The iterative ``fn`` pass ``ctx.cancelled`` to their numerics as ``should_stop``: when the
    session's client is gone they stop within one iteration (:class:`~cmrecon.errors.Cancelled`).
    """
    k = mk.kspace
    t0 = time.perf_counter()
    with on_cine_slice(k.info, method):
        images, provenance = fn(k.kspace, mk.maps.maps, k.mask)
    cropped = np.ascontiguousarray(centre_crop(images, shape_yx(k.info.recon_matrix))).astype(np.complex64)
    ctx.log.info("%s: slice %d, %d phases in %.2f s", method, k.info.slice, len(k.info.phases),
                 time.perf_counter() - t0)
    return CineImages(k.info, cropped, method, dict(provenance, coil_maps=mk.maps.method))


@dataclass(frozen=True)
class CineSenseParams:
    """Parameters of ``cine_sense``."""

    lam: float = field(default=1e-3, metadata={
        "doc": "Tikhonov weight of each phase's CG-SENSE (units of Σ|S|² = 1)"})
    iterations: int = field(default=30, metadata={"doc": "CG iterations per phase (at most)"})
    tol: float = field(default=1e-6, metadata={"doc": "relative residual at which CG stops"})


@register("cine_sense", CineSenseParams, consumes=CineMapped, produces=CineImages, each=True)
def cine_sense(mk: CineMapped, params: CineSenseParams, ctx: StepContext) -> CineImages:
    """Reconstruct every phase on its own with CG-SENSE (the per-phase baseline); images (phases, y, x) in SNR units."""
    from cmrecon.recon.cine import cine_sense as sense_fn

    def run(kspace, maps, mask):
        return sense_fn(kspace, maps, mask, lam=params.lam, iterations=params.iterations,
                        tol=params.tol, should_stop=ctx.cancelled), {"lam": params.lam}
    return _recon(mk, "cine_sense", ctx, run)


@dataclass(frozen=True)
class CineLpsParams:
    """Parameters of ``cine_lps``."""

    lambda_l: float = field(default=0.01, metadata={
        "doc": "singular-value threshold of L, relative to the largest singular value"})
    lambda_s: float = field(default=0.0025, metadata={
        "doc": "soft threshold of S in the temporal Fourier domain, absolute on data scaled so "
               "that max|E^H d| = 1 (unit-norm coil maps)"})
    iterations: int = field(default=50, metadata={"doc": "iterations (at most)"})
    tol: float = field(default=0.0025, metadata={"doc": "relative update at which iterations stop"})
    method: str = field(default="ist", metadata={
        "doc": "ist = Otazo's iterative soft thresholding; pogm = the accelerated variant",
        "choices": ("ist", "pogm")})


@register("cine_lps", CineLpsParams, consumes=CineMapped, produces=CineImages, each=True)
def cine_lps(mk: CineMapped, params: CineLpsParams, ctx: StepContext) -> CineImages:
    """Reconstruct all phases jointly as low rank + sparse (Otazo 2015, temporal-FFT sparsity); images (phases, y, x)."""
    from cmrecon.recon.cine import lps

    def run(kspace, maps, mask):
        res = lps(kspace, maps, mask, lambda_l=params.lambda_l, lambda_s=params.lambda_s,
                  iterations=params.iterations, tol=params.tol, method=params.method,
                  should_stop=ctx.cancelled)
        return res.images, {"iterations": int(res.iterations), "method": params.method}
    return _recon(mk, "cine_lps", ctx, run)


@dataclass(frozen=True)
class CineCrunetParams:
    """Parameters of ``cine_crunet``."""

    weights: str = field(default="cine_crunet_cpu", metadata={
        "doc": "shipped weights name, or a checkpoint inside a weights folder (--weights-path)"})
    device: str = field(default="auto", metadata={
        "doc": "where to run: auto = cuda when available", "choices": ("auto", "cpu", "cuda")})


@register("cine_crunet", CineCrunetParams, consumes=CineMapped, produces=CineImages, each=True,
          check=allowed_weights)
def cine_crunet(mk: CineMapped, params: CineCrunetParams, ctx: StepContext) -> CineImages:
    """Reconstruct all phases with the learned CRUNet-style recurrent U-Net cascades (hard data consistency); images (phases, y, x)."""
    from cmrecon.models.crunet import crunet_reconstruct
    from cmrecon.models.serving import get_model

    entry = get_model(params.weights, params.device, warm_up=False)

    def run(kspace, maps, mask):
        return crunet_reconstruct(entry.model, kspace, maps, mask, entry.device), {
            "weights": entry.path.name, "sha256": entry.sha256, "device": entry.device.type}
    return _recon(mk, "cine_crunet", ctx, run)


@dataclass(frozen=True)
class CineInrParams:
    """Parameters of ``cine_inr``."""

    # defaults are cmrecon.recon.cine_inr.InrParams' (a test keeps them equal; not imported here,
    # so that loading the steps does not import torch)
    iterations: int = field(default=150, metadata={"doc": "Adam iterations per slice (at most)"})
    budget_s: float = field(default=60.0, metadata={
        "doc": "wall-time budget per slice, s: the fit stops there even before its iterations "
               "(then the images depend on the machine's speed; the log and meta say which stopped it)"})
    tv_time_weight: float = field(default=0.1, metadata={
        "doc": "weight of the temporal total variation (Feng 2025: 0.02; 0.1 measured better on noisy data)"})
    nuclear_weight: float = field(default=2e-5, metadata={
        "doc": "weight of the nuclear norm of the (phases × pixels) Casorati matrix / phases "
               "(Feng 2025: 2e-4)"})
    seed: int = field(default=0, metadata={"doc": "seed of the grid and MLP initialisation"})
    device: str = field(default="auto", metadata={
        "doc": "where to fit: auto = cuda when available", "choices": ("auto", "cpu", "cuda")})


@register("cine_inr", CineInrParams, consumes=CineMapped, produces=CineImages, each=True)
def cine_inr(mk: CineMapped, params: CineInrParams, ctx: StepContext) -> CineImages:
    """Fit an unsupervised spatiotemporal implicit neural representation to each slice (Feng 2025); the last iterate, (phases, y, x)."""
    from dataclasses import replace

    from cmrecon.models.device import resolve_device
    from cmrecon.recon.cine_inr import InrParams, fit_inr
    from cmrecon.runtime import apply_torch_threads

    apply_torch_threads()
    device = resolve_device(params.device, "cine_inr device")
    inr = replace(InrParams(), iterations=params.iterations, budget_s=params.budget_s,
                  tv_time_weight=params.tv_time_weight, nuclear_weight=params.nuclear_weight, seed=params.seed)

    def progress(iteration: int, loss: float, elapsed: float) -> None:
        ctx.log.info("cine_inr: slice %d iteration %d/%d loss %.4g (%.1f s)", mk.info.slice, iteration,
                     params.iterations, loss, elapsed)

    def run(kspace, maps, mask):
        res = fit_inr(kspace, maps, mask, inr, progress=progress, device=device, should_stop=ctx.cancelled)
        return res.images, {"iterations": int(res.iterations), "stopped_by": res.stopped_by,
                            "device": device.type}
    return _recon(mk, "cine_inr", ctx, run)


# ----------------------------------------------------------------------------- emit_cine


@dataclass(frozen=True)
class EmitCineParams:
    """Parameters of ``emit_cine``."""

    series_index: int = field(default=1, metadata={"doc": "image_series_index of the cine images"})
    scale: float = field(default=1.0, metadata={
        "doc": "multiplier of |image| (1: SNR units, prewhitened noise σ = 1 per phase image)"})
    window_snr: float = field(default=5.0, metadata={
        "doc": "display window over pixels brighter than window_snr (SNR units), 95th percentile"})


@register("emit_cine", EmitCineParams, consumes=CineImages, produces=ismrmrd.Image)
def emit_cine(items: Iterator[Item], params: EmitCineParams, ctx: StepContext) -> Iterator[Item]:
    """Emit one float32 magnitude MRD image per cardiac phase with Gadgetron cine conventions (phase, trigger time, series).

    Each phase's header (position, orientation, counters, ``physiology_time_stamp`` = trigger
    time) comes from that phase's readout nearest the k-space centre; ``image_index`` runs over
    slices × phases from 1; meta ``CineMethod`` names the recon step, ``cmrecon_trigger_ms`` the
    trigger time, and one display window is shared by every phase of the slice.
    """
    for item in items:
        if isinstance(item, CineImages):
            yield from _cine_images(item, params)
        else:
            yield item


def _cine_images(item: CineImages, params: EmitCineParams) -> Iterator[ismrmrd.Image]:
    info = item.info
    mags = (np.abs(item.images) * params.scale).astype(np.float32)
    centre, width = auto_window(mags.max(axis=0), mags.max(axis=0) > params.window_snr * params.scale)
    n = len(info.phases)
    for pos, phase in enumerate(info.phases):
        ref = info.refs[pos]
        if ref is None:
            raise StepError(f"cine slice {info.slice} phase {phase}: no reference acquisition header")
        meta = {"DataRole": ["Image", "CINE"], "GADGETRON_DataRole": ["Image", "CINE"],
                "CineMethod": item.method, "GADGETRON_ImageComment": [item.method, f"phase {phase}"],
                "cmrecon_trigger_ms": f"{info.trigger_times_ms[pos]:g}",
                "WindowCenter": f"{centre:.6g}", "WindowWidth": f"{width:.6g}"}
        meta.update({f"cmrecon_{k}": v for k, v in item.provenance.items()})
        img = make_image(mags[pos], ref, info.fov_mm, series=params.series_index,
                         index=info.slice * n + pos + 1, image_type=ismrmrd.IMTYPE_MAGNITUDE, meta=meta)
        img.phase = int(phase)
        yield img


__all__ = ["buffer_cine", "cine_coil_maps", "cine_sense", "cine_lps", "cine_crunet", "cine_inr", "emit_cine",
           "time_averaged_calibration", "cine_front_chain"]
