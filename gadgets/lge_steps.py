"""Classical LGE steps: ``buffer_ir_pd`` → ``coil_maps`` → ``unfold`` → [``moco_average``] →
``psir`` → ``emit_images``.

Thin adapters around :mod:`cmrecon.recon.buffer`, :mod:`cmrecon.recon.unfold`,
:mod:`cmrecon.recon.moco` and :mod:`cmrecon.recon.psir`; each declares the typed product
(:mod:`cmrecon.products.lge`) it consumes and produces, and passes every other item through
unchanged. All but ``emit_images`` hand a product that is not an MRD item to the next step, so in
Gadgetron XML they share one ``<external target="steps">``.

Output images are ``(y, x)`` = ``(PE, RO)`` rows × columns (MRD ``matrix_size = (RO, PE, 1)``).

References
----------
Kellman P et al. MRM 2002;47:372-383 (PSIR); MRM 2005;53:194-200 (MOCO averaging).
Griswold MA et al. MRM 2002;47:1202 (GRAPPA). Inati SJ et al. ISMRM 2014; Walsh DO et al. MRM 2000.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import ismrmrd
import numpy as np

from cmrecon.axes import centre_crop, shape_yx
from cmrecon.chain.registry import Item, StepContext, register
from cmrecon.errors import StepError
from cmrecon.io.acquisitions import AcquisitionBlock, flag_mask, head_copy, is_non_imaging
from cmrecon.io.header import encoding_info
from cmrecon.io.images import auto_window, make_image
from cmrecon.products.lge import AveragedImages, CoilMaps, IrPdKspace, MappedKspace, PsirImages, RepeatImages, SliceInfo
from cmrecon.recon.buffer import IrPdBuffer, Readout
from cmrecon.recon.moco import DEFAULT_ROI_FRACTION, choose_repeat, key_frame, plain_average
from cmrecon.recon.moco import moco_average as moco_average_images
from cmrecon.recon.psir import psir as psir_fn
from cmrecon.recon.unfold import calibration_block, estimate_maps
from cmrecon.recon.unfold import unfold as unfold_images


@contextmanager
def on_slice(info: SliceInfo, what: str) -> Iterator[None]:
    """Re-raise a numerics ``ValueError`` as a :class:`StepError` naming the slice and the step."""
    try:
        yield
    except ValueError as exc:
        raise StepError(f"slice {info.slice}: {what}: {exc}") from exc


# ----------------------------------------------------------------------------- buffer_ir_pd


@dataclass(frozen=True)
class BufferIrPdParams:
    """Parameters of ``buffer_ir_pd``."""

    repeat_counter: str = field(default="auto", metadata={
        "doc": "encoding counter that numbers the IR/PD repeats: auto = both average and "
               "repetition (a repeat is a distinct (repetition, average) pair: Siemens-style LGE "
               "counts in average, Gadgetron's generic Cartesian layout in repetition)",
        "choices": ("auto", "average", "repetition")})
    expected_repeats: int = field(default=0, metadata={
        "doc": "repeats per slice; 0 = from the header's encoding limits of the counter(s) "
               "(when the header has none, slices are released at the end of the stream)"})


def _limit_count(limits, name: str) -> int | None:
    lim = getattr(limits, name, None) if limits is not None else None
    if lim is None or lim.maximum is None:
        return None
    return int(lim.maximum) - int(lim.minimum or 0) + 1


#: multiplier of ``repetition`` in the combined repeat index when the header gives no average limit
_COUNTER_SPAN = 1 << 16


def repeat_indexer(counter: str, limits) -> tuple[Callable[[Any], int], int | None]:
    """How a readout's repeat is numbered, and how many repeats the header declares.

    ``auto``: ``repetition · n_average + average`` (``n_average`` from the header's average
    limit), so whichever counter the scanner used, each IR/PD pair gets its own index and the
    count is ``n_average · n_repetition``; ``average``/``repetition``: that counter alone.

    Returns
    -------
    (index_of, expected) : a function of ``acquisition.idx`` and the declared count (None when
        the header does not declare it).
    """
    n_avg, n_rep = _limit_count(limits, "average"), _limit_count(limits, "repetition")
    if counter == "average":
        return (lambda idx: int(idx.average)), n_avg
    if counter == "repetition":
        return (lambda idx: int(idx.repetition)), n_rep
    span = n_avg or _COUNTER_SPAN
    expected = n_avg * n_rep if n_avg is not None and n_rep is not None else None
    return (lambda idx: int(idx.repetition) * span + int(idx.average)), expected


def _make_buffer(params: BufferIrPdParams, ctx: StepContext) -> tuple[IrPdBuffer, Callable[[Any], int]]:
    info = encoding_info(ctx.header)
    enc = ctx.header.encoding[0]
    limits = enc.encodingLimits
    index_of, declared = repeat_indexer(params.repeat_counter, limits)
    repeats = params.expected_repeats or declared
    if params.expected_repeats < 0:
        raise StepError(f"buffer_ir_pd expected_repeats = {params.expected_repeats} must be >= 0")
    if repeats is None:
        ctx.log.warning("buffer_ir_pd: the header has no %s limit; slices are released at the "
                        "end of the stream", params.repeat_counter)
    accel = None
    pi = getattr(enc, "parallelImaging", None)
    if pi is not None and pi.accelerationFactor is not None and pi.accelerationFactor.kspace_encoding_step_1:
        accel = int(pi.accelerationFactor.kspace_encoding_step_1)
    mode = getattr(pi, "calibrationMode", None) if pi is not None else None
    mode = getattr(mode, "value", mode)
    buf = IrPdBuffer(info.encoded_matrix[1], info.center_line, info.recon_matrix,
                          info.recon_fov_mm, expected_repeats=repeats, acceleration=accel,
                          num_sets=_limit_count(limits, "set"),
                          calibration_mode=str(mode).lower() if mode else "embedded", budget=ctx.budget)
    return buf, index_of


#: MRD flag bits the buffer reads from a readout's header
_CALIB_ONLY = flag_mask(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
_CALIB_AND_IMAGING = flag_mask(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
_LAST_IN_SLICE = flag_mask(ismrmrd.ACQ_LAST_IN_SLICE)


@register("buffer_ir_pd", BufferIrPdParams, consumes=ismrmrd.Acquisition, produces=IrPdKspace, blocks=True)
def buffer_ir_pd(items: Iterator[Item], params: BufferIrPdParams, ctx: StepContext) -> Iterator[Item]:
    """Collect each slice's IR (set 0) and PD (set 1) readouts of every repeat plus ACS; emit an IrPdKspace.

    A slice is released as soon as ``ACQ_LAST_IN_SLICE`` has arrived for both sets of every
    repeat the encoding limits declare, else at the end of the stream; released slices are
    dropped from memory. Noise/navigator/dummy readouts are consumed; other items pass.
    Missing PD partners, sets other than 0/1 and changing coil counts are ``StepError``.
    Readouts come one at a time or in blocks (:class:`~cmrecon.io.acquisitions.AcquisitionBlock`).
    """
    buf = None
    for item in items:
        if isinstance(item, AcquisitionBlock):
            readouts = zip(item.heads, item.data)
        elif isinstance(item, ismrmrd.Acquisition):
            if is_non_imaging(item):
                continue
            readouts = ((item._head, np.asarray(item.data)),)
        else:
            yield item
            continue
        for head, data in readouts:
            if buf is None:
                buf, index_of = _make_buffer(params, ctx)
            idx, flags = head.idx, head.flags
            calib_only = bool(flags & _CALIB_ONLY)
            readout = Readout(
                data=data, slice=int(idx.slice), set=int(idx.set), repeat=index_of(idx),
                line=int(idx.kspace_encode_step_1), center_sample=int(head.center_sample),
                calibration=calib_only or bool(flags & _CALIB_AND_IMAGING), imaging=not calib_only,
                last_in_slice=bool(flags & _LAST_IN_SLICE),
                ref=head_copy(head))
            for sl in buf.push(readout):
                ctx.log.info("buffer_ir_pd: slice %d complete (%d repeats, R=%d)", sl.info.slice,
                             len(sl.info.repeats), sl.acceleration)
                yield sl
    if buf is not None:
        for sl in buf.flush():
            ctx.log.info("buffer_ir_pd: slice %d released at end of stream (%d repeats)",
                         sl.info.slice, len(sl.info.repeats))
            yield sl


# ----------------------------------------------------------------------------- coil_maps


@dataclass(frozen=True)
class CoilMapsParams:
    """Parameters of ``coil_maps``."""

    method: str = field(default="inati", metadata={
        "doc": "coil-map estimator", "choices": ("inati", "walsh", "espirit")})
    window_px: int = field(default=7, metadata={"doc": "odd smoothing window of inati/walsh, pixels"})
    espirit_kernel_px: int = field(default=6, metadata={"doc": "ESPIRiT kernel side, pixels"})
    espirit_threshold: float = field(default=0.02, metadata={
        "doc": "ESPIRiT relative singular-value threshold"})
    espirit_crop: float = field(default=0.8, metadata={
        "doc": "ESPIRiT eigenvalue below which maps are zero"})


@register("coil_maps", CoilMapsParams, consumes=IrPdKspace, produces=MappedKspace, each=True)
def coil_maps(sl: IrPdKspace, params: CoilMapsParams, ctx: StepContext) -> MappedKspace:
    """Attach unit-norm coil maps (coils, ky, kx) estimated from the PD calibration data (Inati, Walsh or ESPIRiT)."""
    with on_slice(sl.info, f"{params.method} coil maps"):
        calib = calibration_block(sl.calibration.pd, sl.pd, sl.mask_pe)
        maps = estimate_maps(calib, sl.mask_pe.shape + sl.pd.shape[-1:], params.method,
                             params.window_px, params.espirit_kernel_px, params.espirit_threshold,
                             params.espirit_crop)
    return MappedKspace(sl, CoilMaps(maps.astype(np.complex64), params.method))


# ----------------------------------------------------------------------------- unfold


@dataclass(frozen=True)
class UnfoldParams:
    """Parameters of ``unfold``."""

    method: str = field(default="grappa", metadata={
        "doc": "parallel-imaging reconstruction", "choices": ("grappa", "sense")})
    partial_fourier: str = field(default="zerofill", metadata={
        "doc": "partial-Fourier handling", "choices": ("zerofill", "homodyne", "pocs")})
    grappa_kernel_ky: int = field(default=4, metadata={"doc": "GRAPPA source rows"})
    grappa_kernel_kx: int = field(default=5, metadata={"doc": "GRAPPA readout points (odd)"})
    grappa_lam: float = field(default=1e-4, metadata={"doc": "GRAPPA relative Tikhonov weight"})
    sense_lam: float = field(default=1e-3, metadata={"doc": "SENSE Tikhonov weight (units of Σ|S|²)"})
    sense_method: str = field(default="auto", metadata={
        "doc": "SENSE solver: auto = unfolding on a pure lattice else CG",
        "choices": ("auto", "unfold", "cg")})
    sense_iterations: int = field(default=30, metadata={"doc": "CG-SENSE iterations"})


def unfold_cropped(mk: MappedKspace, params: UnfoldParams = UnfoldParams(),
                   repeats: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """IR and PD images ``(repeats, y, x)`` of ``mk`` with the unfold step's parameters, cropped."""
    k = mk.kspace
    with on_slice(k.info, f"{params.method} unfold"):
        ir, pd = unfold_images(k.ir[repeats], k.pd[repeats], mk.maps.maps, k.mask_pe, k.acceleration,
                               k.calibration.pd, params.method, params.partial_fourier,
                               (params.grappa_kernel_ky, params.grappa_kernel_kx), params.grappa_lam,
                               params.sense_lam, params.sense_method, params.sense_iterations)
    crop = lambda a: np.ascontiguousarray(centre_crop(a, shape_yx(k.info.recon_matrix)))  # noqa: E731
    return crop(ir), crop(pd)


@register("unfold", UnfoldParams, consumes=MappedKspace, produces=RepeatImages, each=True)
def unfold(mk: MappedKspace, params: UnfoldParams, ctx: StepContext) -> RepeatImages:
    """Reconstruct coil-combined complex IR and PD images per repeat (repeats, y, x) in SNR units (GRAPPA or SENSE)."""
    ir, pd = unfold_cropped(mk, params)
    return RepeatImages(mk.info, ir, pd)   # the k-space is not handed on: memory stays bounded


# ----------------------------------------------------------------------------- moco_average


@dataclass(frozen=True)
class MocoAverageParams:
    """Parameters of ``moco_average``."""

    mode: str = field(default="moco", metadata={
        "doc": "moco = register and average the best repeats; plain = average all repeats "
               "without registration (a baseline)", "choices": ("moco", "plain")})
    transform: str = field(default="rigid", metadata={
        "doc": "registration model", "choices": ("translation", "rigid", "nonrigid")})
    keep_fraction: float = field(default=0.5, metadata={
        "doc": "fraction of repeats kept, best by post-registration correlation with the key frame"})
    roi_fraction: float = field(default=DEFAULT_ROI_FRACTION, metadata={
        "doc": "key frame, registration and selection use a central Hann-weighted region "
               "spanning this fraction of each axis (the heart at the isocentre); 1 = whole image"})
    reference: str = field(default="key", metadata={
        "doc": "position of the average: key = the key frame's (the clinical convention, where "
               "psir_classic and psirnet_lge also output), mean = mean position of all repeats",
        "choices": ("key", "mean")})
    register_pd_to_ir: bool = field(default=True, metadata={
        "doc": "align the averaged PD to the averaged IR (translation on gradient images)"})
    max_pd_shift_px: float = field(default=5.0, metadata={"doc": "largest accepted PD-to-IR shift, pixels"})
    demons_iterations: int = field(default=60, metadata={"doc": "demons iterations (nonrigid)"})


@register("moco_average", MocoAverageParams, consumes=RepeatImages, produces=AveragedImages, each=True)
def moco_average(im: RepeatImages, params: MocoAverageParams, ctx: StepContext) -> AveragedImages:
    """Motion-corrected (1/√K)-average of the repeats: key frame, heart-ROI registration, PD-to-IR alignment, best half (Kellman 2005)."""
    if params.mode == "plain":
        ir, pd = plain_average(im.ir, im.pd)
        return AveragedImages(im.info, ir, pd, used=tuple(range(len(im.ir))),
                              key=key_frame(im.ir, params.roi_fraction), roles=("AVE",))
    res = moco_average_images(im.ir, im.pd, transform=params.transform,
                              keep_fraction=params.keep_fraction,
                              roi_fraction=params.roi_fraction, reference=params.reference,
                              register_pd_to_ir=params.register_pd_to_ir,
                              max_pd_shift_px=params.max_pd_shift_px,
                              demons_iterations=params.demons_iterations)
    ctx.log.info("moco_average: slice %d key frame %d, kept %s of %d, recentred by %s px, "
                 "PD shift %s px", im.info.slice, res.key_index, res.kept.tolist(), len(im.ir),
                 np.round(res.recentre_shift, 2).tolist(), np.round(res.pd_shift, 2).tolist())
    diag = dict(moco_key=res.key_index, moco_kept=res.kept.tolist(), moco_shifts=res.shifts.tolist(),
                moco_pd_shift=res.pd_shift.tolist(), moco_recentre=res.recentre_shift.tolist())
    return AveragedImages(im.info, res.ir, res.pd, used=tuple(int(k) for k in res.kept),
                          key=int(res.key_index), roles=("MOCO", "AVE"), diagnostics=diag)


# ----------------------------------------------------------------------------- psir


@dataclass(frozen=True)
class PsirParams:
    """Parameters of ``psir``."""

    repeat: int = field(default=-1, metadata={
        "doc": "position (0-based, in acquisition order of the repeat counter) of the single "
               "repeat to use; -1 = the key frame (recon.moco.key_frame); ignored for "
               "averaged input from moco_average"})
    roi_fraction: float = field(default=DEFAULT_ROI_FRACTION, metadata={
        "doc": "the key frame compares IR magnitudes inside a central Hann-weighted region "
               "spanning this fraction of each axis (1 = whole image)"})
    window_px: int = field(default=7, metadata={"doc": "surface-coil-correction window, pixels"})
    t_sigma: float = field(default=4.0, metadata={"doc": "SCC regularisation in multiples of σ"})
    noise_sigma: float = field(default=1.0, metadata={"doc": "image noise σ (1 in SNR units)"})
    hanning_fraction: float = field(default=0.5, metadata={
        "doc": "k-space fraction of the Hanning low-pass of the PD background phase"})
    psirnet_compatible: bool = field(default=False, metadata={
        "doc": "use the PSIRNet head (unfiltered PD phase) instead of Kellman's filtered phase"})


def classical_psir(ir: np.ndarray, pd: np.ndarray, params: PsirParams):
    """Kellman PSIR of one ``(y, x)`` IR/PD pair with the psir step's parameters."""
    return psir_fn(ir, pd, window_px=params.window_px, noise_sigma=params.noise_sigma,
                   t=params.t_sigma, hanning_fraction=params.hanning_fraction,
                   psirnet_compatible=params.psirnet_compatible)


@register("psir", PsirParams, consumes=(RepeatImages, AveragedImages), produces=PsirImages, each=True)
def psir(im: RepeatImages | AveragedImages, params: PsirParams, ctx: StepContext) -> PsirImages:
    """Surface-coil-corrected PSIR and MagIR (Kellman 2002) from one repeat or the averaged IR/PD pair."""
    with on_slice(im.info, "psir"):
        if isinstance(im, RepeatImages):
            k = choose_repeat(im.ir, params.repeat, params.roi_fraction)
            ir, pd, used, key, roles = im.ir[k], im.pd[k], (k,), k, ()
        else:
            ir, pd, used, key, roles = im.ir, im.pd, im.used, im.key, im.roles
        res = classical_psir(ir, pd, params)
    provenance = im.diagnostics if isinstance(im, AveragedImages) else {}
    return PsirImages(im.info, res, pd, noise_sigma=params.noise_sigma, used=tuple(used), key=int(key),
                      roles=roles, provenance=provenance)


# ----------------------------------------------------------------------------- emit_images


@dataclass(frozen=True)
class EmitImagesParams:
    """Parameters of ``emit_images``."""

    float_ratio: bool = field(default=False, metadata={
        "doc": "emit the PSIR as float32 IR/PD ratios (research) instead of ratio·scale + offset"})
    psir_series_index: int = field(default=1, metadata={"doc": "image_series_index of PSIR images"})
    magir_series_index: int = field(default=2, metadata={"doc": "image_series_index of MagIR images"})
    emit_magir: bool = field(default=True, metadata={"doc": "also emit the MagIR image"})
    emit_pd: bool = field(default=False, metadata={
        "doc": "also emit the PD magnitude |PD| in SNR units (prewhitened noise σ = 1; no "
               "surface-coil correction, so coil shading shows)"})
    pd_series_index: int = field(default=3, metadata={"doc": "image_series_index of PD images"})
    scale: float = field(default=1000.0, metadata={"doc": "PSIR/MagIR multiplier (Gadgetron: 1000)"})
    offset: float = field(default=4096.0, metadata={
        "doc": "PSIR offset (Gadgetron: 4096, meta GADGETRON_ScaleOffset)"})
    window_snr: float = field(default=5.0, metadata={
        "doc": "auto window over pixels with |PD| > window_snr·σ, 95th percentile"})


def _ti_ms(ctx: StepContext) -> float | None:
    seq = getattr(ctx.header, "sequenceParameters", None)
    ti = getattr(seq, "TI", None) if seq is not None else None
    return float(ti[0]) if ti else None


_SOURCE = {(): ("repeats", "SINGLE"), ("MOCO", "AVE"): ("moco", "MOCO"), ("AVE",): ("average", "AVERAGE")}


@register("emit_images", EmitImagesParams, consumes=PsirImages, produces=ismrmrd.Image)
def emit_images(items: Iterator[Item], params: EmitImagesParams, ctx: StepContext) -> Iterator[Item]:
    """Emit MRD images with Gadgetron CMR conventions: REAL PSIR (·1000 + 4096), MagIR (and optionally PD), with DataRole, window and TI meta.

    Images are (y, x) = (PE, RO). PSIR: ``IMTYPE_REAL`` float32 ``ratio·scale + offset`` (meta
    ``GADGETRON_ScaleOffset`` = offset, ``GADGETRON_ScaleRatio`` = scale), or the float ratio
    itself with ``float_ratio`` (ScaleOffset 0, ScaleRatio 1). MagIR: ``IMTYPE_MAGNITUDE``
    ``|IR|·a·scale``; PD (``emit_pd``) ``|PD|`` in SNR units. Headers (position, orientation,
    counters, time stamps) come from the centre readout of the IR heartbeat of the repeat used
    (MOCO: the key frame).
    """
    for item in items:
        if isinstance(item, PsirImages):
            yield from _psir_images(item, params, _ti_ms(ctx))
        else:
            yield item


def _psir_images(item: PsirImages, params: EmitImagesParams, ti: float | None) -> Iterator[ismrmrd.Image]:
    """The MRD images of one slice's :class:`PsirImages` (PSIR, then MagIR and PD when asked)."""
    info = item.info
    ref = info.refs[item.key][0]
    if ref is None:
        raise StepError(f"slice {info.slice}: no reference acquisition header for the image")
    source, comment = _SOURCE[item.roles]
    mask = np.abs(item.pd) > params.window_snr * item.noise_sigma
    used = [int(info.repeats[k]) for k in item.used]
    common = {"GADGETRON_ImageComment": [comment, f"repeats {','.join(map(str, used))}"],
              "cmrecon_repeats_used": used,
              "cmrecon_source": source}
    if item.fallback is not None:   # a learned step handed back the classical result, and why
        common["cmrecon_fallback"] = item.fallback
        common["GADGETRON_ImageComment"] = common["GADGETRON_ImageComment"] + ["CLASSICAL FALLBACK"]
    if ti is not None:
        common["GADGETRON_TI"] = f"{ti:g}"
    roles = list(item.roles)
    if params.float_ratio:
        data = item.psir.psir.astype(np.float32)
        centre, width = auto_window(data, mask, low=0.0)
        offset, scale = 0.0, 1.0
    else:
        data = (item.psir.psir * params.scale + params.offset).astype(np.float32)
        centre, width = auto_window(data, mask, low=params.offset)
        offset, scale = params.offset, params.scale
    meta = dict(common, DataRole=["PSIR"] + roles, GADGETRON_DataRole=["PSIR"] + roles,
                GADGETRON_ScaleOffset=f"{offset:g}", GADGETRON_ScaleRatio=f"{scale:g}",
                WindowCenter=f"{centre:.6g}", WindowWidth=f"{width:.6g}",
                cmrecon_float_ratio=str(params.float_ratio).lower())
    yield make_image(data, ref, info.fov_mm, series=params.psir_series_index,
                     index=info.slice + 1, image_type=ismrmrd.IMTYPE_REAL, meta=meta)
    magnitudes = [("MagIR", params.emit_magir, params.magir_series_index, params.scale,
                   item.psir.magir),
                  ("PD", params.emit_pd, params.pd_series_index, 1.0, np.abs(item.pd))]
    for role, wanted, series, scale, values in magnitudes:
        if not wanted:
            continue
        mag = (values * scale).astype(np.float32)
        centre, width = auto_window(mag, mask, low=0.0)
        meta = dict(common, DataRole=[role] + roles, GADGETRON_DataRole=[role] + roles,
                    WindowCenter=f"{centre:.6g}", WindowWidth=f"{width:.6g}")
        yield make_image(mag, ref, info.fov_mm, series=series, index=info.slice + 1,
                         image_type=ismrmrd.IMTYPE_MAGNITUDE, meta=meta)
