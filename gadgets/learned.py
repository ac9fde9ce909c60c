"""Learned single-shot PSIR: step ``psirnet_recon`` (chain ``psirnet_lge``).

``buffer_ir_pd`` → ``coil_maps`` → **psirnet_recon** → ``emit_images``: the PSIRNet-style model
reconstructs surface-coil-corrected PSIR from one IR/PD repeat of undersampled k-space and
hands the slice on with ``psir`` (a :class:`cmrecon.recon.psir.PsirResult`) and ``psir_pd``
filled, so the classical ``emit_images`` writes the MRD images with the same Gadgetron
conventions as ``psir_classic``/``psir_moco`` (REAL PSIR ×1000 + 4096, MagIR, DataRole, window).

The model is loaded once per process and shared by every connection
(:func:`cmrecon.models.serving.get_model`); products ↔ tensors in :mod:`cmrecon.models.adapter`.

References
----------
PSIRNet: arXiv 2604.08781; github.com/microsoft/psirnet (MIT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List

import numpy as np

from cmrecon.axes import centre_crop, shape_yx
from cmrecon.chain.registry import Item, StepContext, register
from cmrecon.errors import StepError
from cmrecon.products.lge import MappedKspace, PsirImages, RepeatImages
from cmrecon.recon.moco import choose_repeat
from cmrecon.recon.psir import PsirResult
from cmrecon.recon.psir import psir as psir_fn
from cmrecon_gadgets.lge_steps import PsirParams, classical_psir, on_slice, unfold_cropped


@dataclass(frozen=True)
class PsirnetReconParams:
    """Parameters of ``psirnet_recon``."""

    weights: str = field(default="psir_refine_cpu", metadata={
        "doc": "shipped weights name (cmrecon.models.shipped.SHIPPED), or the path of a checkpoint "
               "(with its .sha256 sidecar) or TorchScript file inside a weights folder (cmrecon "
               "serve --weights-path, CMRECON_WEIGHTS_PATH); any other path is refused. PsirRefine "
               "weights (the refine preset, e.g. psir_refine_cpu) refine the slice's classical "
               "GRAPPA images of the key-frame repeat instead of unrolling on its k-space"})
    weights_sha256: str = field(default="", metadata={
        "doc": "sha256 the weights file must have (\"\" = the shipped registry's or the file's "
               ".sha256 sidecar); needed for a TorchScript file without a sidecar"})
    preset: str = field(default="published", metadata={
        "doc": "architecture of a TorchScript weights file (models.psirnet.PRESETS: published, "
               "cpu_small)"})
    device: str = field(default="auto", metadata={
        "doc": "where the model runs: auto = CUDA when present, else CPU",
        "choices": ("auto", "cpu", "cuda")})
    batch_slices: int = field(default=4, metadata={
        "doc": "PSIRNet weights: slices per forward pass (held until that many have arrived or "
               "the stream ends); halved on CUDA out-of-memory, then CPU"})
    repeat: int = field(default=-1, metadata={
        "doc": "position of the repeat to use; -1 = the key frame (recon.moco.key_frame, as "
               "psir and moco_average; the published input choice)"})
    roi_fraction: float = field(default=0.5, metadata={
        "doc": "the key frame compares IR magnitudes (zero-filled for PSIRNet weights, GRAPPA for "
               "the refine preset, as psir) in a central Hann region spanning this fraction of "
               "each axis"})
    min_coils: int = field(default=2, metadata={"doc": "PSIRNet weights: fewest receive coils accepted"})
    max_coils: int = field(default=64, metadata={"doc": "PSIRNet weights: most receive coils accepted"})
    max_acceleration: int = field(default=3, metadata={
        "doc": "PSIRNet weights: highest R they were trained for (psirnet_cpu_small: 1-3); refine "
               "weights carry their own training range (matrices, R)"})
    fallback: bool = field(default=True, metadata={
        "doc": "an input the model was not trained for (coils, matrix, R) gets the classical "
               "PSIR of the same key-frame repeat instead, said in the log and in the image meta "
               "(cmrecon_fallback); false: an error"})


def classical_pd(mk: MappedKspace, k: int) -> np.ndarray:
    """The classical PD image ``(y, x)`` of repeat ``k`` (GRAPPA/zero-filled with the slice's maps).

    The network's PD output is an intermediate of its PSIR head, not an image of the PD
    heartbeat: in air it carries stripes brighter than tissue. The PD series a reader sees
    (and the display-window mask ``|PD| > 5σ``) is the reconstructed PD heartbeat itself.
    """
    return unfold_cropped(mk, repeats=slice(k, k + 1))[1][0]


def _finish(mk: MappedKspace, inp, out, entry) -> PsirImages:
    """The model's PSIR of one slice as the product ``emit_images`` consumes."""
    crop = lambda a: np.ascontiguousarray(centre_crop(a, shape_yx(mk.info.recon_matrix)))  # noqa: E731
    res = PsirResult(psir=crop(out.psir), magir=crop(out.magir), phase=crop(out.phase),
                     scc=crop(out.scc))
    provenance = dict(psirnet_weights=entry.weights, psirnet_sha256=entry.sha256,
                      psirnet_device=str(entry.device))
    return PsirImages(mk.info, res, classical_pd(mk, inp.repeat), noise_sigma=1.0,
                      used=(inp.repeat,), key=inp.repeat, provenance=provenance)


def _load_model(weights: str, device: str, preset: str = "published", sha256: str = ""):
    """Import torch and the model code, then load (cached per process) and warm up the model."""
    from cmrecon.models.serving import get_model
    return get_model(weights, device, preset=preset, sha256=sha256)


def _classical_result(info, ir: np.ndarray, pd: np.ndarray, k: int, reason: str) -> PsirImages:
    """The classical PSIR (Kellman) of repeat ``k`` of ``ir``/``pd`` ``(repeats, y, x)``, and why."""
    p = PsirParams()   # exactly what psir_classic's psir step does
    return PsirImages(info, classical_psir(ir[k], pd[k], p), pd[k], noise_sigma=p.noise_sigma,
                      used=(int(k),), key=int(k), fallback=f"classical PSIR: {reason}")


def _classical_fallback(mk: MappedKspace, params: PsirnetReconParams, reason: str) -> PsirImages:
    """The classical PSIR of the slice's key-frame repeat (GRAPPA, Kellman), and why."""
    ir, pd = unfold_cropped(mk)
    with on_slice(mk.info, "psirnet_recon"):
        k = choose_repeat(ir, params.repeat, params.roi_fraction)
        return _classical_result(mk.info, ir, pd, k, reason)


def allowed_weights(params) -> None:
    """Step check: ``params.weights`` is a shipped name or a file inside a weights folder.

    Run when the chain is loaded, so a client naming weights no chain may use (or a file that is
    not there) hears it before sending data; loading and verifying the digest follow at the
    first slice.

    Raises
    ------
    WeightsError
        :func:`cmrecon.models.shipped.resolve_chain_weights`' one message.
    """
    from cmrecon.models.shipped import resolve_chain_weights
    resolve_chain_weights(params.weights)


@register("psirnet_recon", PsirnetReconParams, consumes=MappedKspace, produces=PsirImages,
          check=allowed_weights)
def psirnet_recon(items: Iterator[Item], params: PsirnetReconParams,
                  ctx: StepContext) -> Iterator[Item]:
    """Learned PSIR from one IR/PD repeat (PSIRNet-style unrolled network); batches slices, model shared per process."""
    if params.batch_slices < 1:
        raise StepError(f"psirnet_recon batch_slices = {params.batch_slices} must be >= 1")
    if not 1 <= params.min_coils <= params.max_coils:
        raise StepError(f"psirnet_recon coil range {params.min_coils}..{params.max_coils} is empty")
    # Load (and warm up) the model while the stream's first slice is still arriving: importing
    # torch and reading the weights take seconds that would otherwise follow that slice.
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmrecon-model-load")
    loading = pool.submit(_load_model, params.weights, params.device, params.preset,
                          params.weights_sha256)
    pool.shutdown(wait=False)
    entry = None
    pending: List = []

    def run_pending() -> Iterator[Item]:
        from cmrecon.models.serving import infer_slices
        outs = infer_slices(entry, [inp for _, inp in pending], params.batch_slices, ctx.log)
        for (mk, inp), out in zip(pending, outs):
            ctx.log.info("psirnet_recon: slice %d from repeat %d of %d", mk.info.slice,
                         mk.info.repeats[inp.repeat], len(mk.info.repeats))
            yield _finish(mk, inp, out, entry)
        pending.clear()

    for item in items:
        if not isinstance(item, MappedKspace):
            yield item
            continue
        if entry is None:
            entry = loading.result()
        if type(entry.model).__name__ == "PsirRefine":   # the refine preset: classical images in
            ir, pd = unfold_cropped(item)
            yield _refined(item.info, ir, pd, entry, params.repeat, params.roi_fraction,
                           params.fallback, "psirnet_recon", ctx)
            continue
        from cmrecon.models.adapter import UnsupportedInput, prepare_slice
        try:
            if item.kspace.acceleration > params.max_acceleration:
                raise UnsupportedInput(f"slice {item.info.slice}: R = {item.kspace.acceleration} is above the "
                                       f"R <= {params.max_acceleration} the weights were trained for")
            inp = prepare_slice(item, params.repeat, params.roi_fraction, params.min_coils,
                                params.max_coils, entry.min_matrix)
        except UnsupportedInput as exc:
            if not params.fallback:
                raise
            ctx.log.warning("psirnet_recon: %s; classical PSIR for this slice instead", exc)
            yield _classical_fallback(item, params, str(exc))
            continue
        pending.append((item, inp))
        if len(pending) >= params.batch_slices:
            yield from run_pending()
    if pending:
        yield from run_pending()


# ----------------------------------------------------------------------------- psir_refine


@dataclass(frozen=True)
class PsirRefineParams:
    """Parameters of ``psir_refine``."""

    weights: str = field(default="psir_refine_cpu", metadata={
        "doc": "shipped weights name (cmrecon.models.shipped.SHIPPED) or the path of a PsirRefine "
               "checkpoint (with its .sha256 sidecar) inside a weights folder (cmrecon serve "
               "--weights-path, CMRECON_WEIGHTS_PATH); any other path is refused"})
    repeat: int = field(default=-1, metadata={
        "doc": "position of the repeat to refine; -1 = the key frame (as psir)"})
    roi_fraction: float = field(default=0.5, metadata={
        "doc": "the key frame compares IR magnitudes in a central Hann region spanning this "
               "fraction of each axis (as psir)"})
    fallback: bool = field(default=True, metadata={
        "doc": "an input the weights were not trained on (matrix, R) gets the classical PSIR of "
               "the same key-frame repeat instead, said in the log and in the image meta "
               "(cmrecon_fallback); false: an error"})


def _refine_model(weights: str):
    """The PsirRefine model ``weights`` (verified, loaded once per process on the CPU)."""
    from cmrecon.models.serving import get_model
    entry = get_model(weights, "cpu", warm_up=False)
    if type(entry.model).__name__ != "PsirRefine":
        raise StepError(f"psir_refine weights {weights!r} hold a {type(entry.model).__name__}, "
                        "not a PsirRefine model (psirnet_recon takes PSIRNet weights)")
    return entry


#: 3×3-mean |PD| (SNR units, classical image) below which a pixel may be background air
AIR_PD_SNR = 3.0


def background_air(pd: np.ndarray) -> np.ndarray:
    """Background air of a ``(y, x)`` PD image in SNR units: low-signal regions touching the border.

    A pixel is low-signal where the 3×3 mean of |PD| is below :data:`AIR_PD_SNR` (noise alone:
    Rayleigh mean 0.89σ, the 3×3 mean's spread ~0.15σ; tissue is at 10σ and more); of those, only
    the connected regions that touch the image border are background, so the lungs and other
    dark regions inside the body are not.

    Returns
    -------
    (y, x) bool
    """
    from scipy import ndimage
    low = ndimage.uniform_filter(np.abs(pd).astype(np.float32), size=3, mode="nearest") < AIR_PD_SNR
    labels, _ = ndimage.label(low)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0])


def _classical_outside_signal(res: PsirResult, ir: np.ndarray, pd: np.ndarray) -> PsirResult:
    """``res`` with the classical PSIR and MagIR in the background air (:func:`background_air`).

    The refine network is trained on the body's PSIR only (its loss weighs air 0), so outside the
    body its output is not an image (stripes brighter than noise); there the classical result of
    the same repeat stands. Inside the body, lungs included, the network's result is kept.

    Parameters
    ----------
    res : the refined result, ``(y, x)`` arrays.
    ir, pd : (y, x) complex64, the classical images of the repeat, SNR units.
    """
    air = background_air(pd)
    if not air.any():
        return res
    classical = classical_psir(ir, pd, PsirParams())
    psir = np.where(air, classical.psir, res.psir).astype(np.float32)
    magir = np.where(air, classical.magir, res.magir).astype(np.float32)
    return PsirResult(psir=psir, magir=magir, phase=res.phase, scc=res.scc)


def _refined(info, ir: np.ndarray, pd: np.ndarray, entry, repeat: int, roi_fraction: float,
             fallback: bool, step: str, ctx: StepContext) -> PsirImages:
    """PsirRefine on the key-frame repeat of ``ir``/``pd`` ``(repeats, y, x)``, then its head;
    the classical PSIR of that repeat for an input outside the weights' training range.
    """
    import torch

    with on_slice(info, step):
        k = choose_repeat(ir, repeat, roi_fraction)
    model = entry.model
    why = model.unsupported(ir.shape[-2:], info.acceleration)
    if why is not None:
        if not fallback:
            raise StepError(f"{step}: slice {info.slice}: {why}")
        ctx.log.warning("%s: slice %d: %s; classical PSIR for this slice instead", step, info.slice, why)
        return _classical_result(info, ir, pd, k, why)
    as_input = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None].to(entry.device)  # noqa: E731
    with torch.no_grad(), entry.lock:
        ir2, pd2 = model.refine(as_input(ir[k]), as_input(pd[k]))
    g = model.gain
    ir_g = (ir2[0, 0].cpu().numpy() * g).astype(np.complex64)
    pd_g = (pd2[0, 0].cpu().numpy() * g).astype(np.complex64)
    # the model's head: reg = (t·σ)² = 16 on images of gain g (σ = g there; the MOCO target's)
    res = psir_fn(ir_g, pd_g, window_px=model.window_px, noise_sigma=1.0,
                  t=float(np.sqrt(model.reg)), psirnet_compatible=True)
    res = _classical_outside_signal(res, ir[k], pd[k])
    ctx.log.info("%s: slice %d, repeat %d of %d refined (%s)", step, info.slice, info.repeats[k],
                 len(ir), entry.weights)
    # the PD series is the reconstructed PD heartbeat (SNR units): the network is trained on the
    # body's PSIR only, so its PD in air is not an image (as classical_pd for psirnet_recon)
    return PsirImages(info, res, pd[k], noise_sigma=1.0, used=(int(k),), key=int(k),
                      provenance=dict(psir_refine_weights=entry.weights, psir_refine_sha256=entry.sha256))


@register("psir_refine", PsirRefineParams, consumes=RepeatImages, produces=PsirImages, each=True,
          check=allowed_weights)
def psir_refine(im: RepeatImages, params: PsirRefineParams, ctx: StepContext) -> PsirImages:
    """Learned refinement of the classical single shot (key-frame GRAPPA IR/PD images), then the PSIRNet head."""
    return _refined(im.info, im.ir, im.pd, _refine_model(params.weights), params.repeat,
                    params.roi_fraction, params.fallback, "psir_refine", ctx)
