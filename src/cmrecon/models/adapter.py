"""The PSIRNet adapter: our typed slice products ↔ the model's tensors, the one transpose.

* :func:`prepare_slice` — a :class:`~cmrecon.products.lge.MappedKspace` (after ``coil_maps``) →
  :class:`SliceInput`: one repeat (the key frame, as the published pipeline chooses its input,
  or a given one), transposed from :mod:`cmrecon.axes`' ``(coils, ky, kx)`` to the model's
  ``(coils, RO, PE)`` (the published model was trained readout-first); input the model was not
  trained for is :class:`UnsupportedInput`.
* :func:`psirnet_images` — the model's reconstruction plus PSIR head, keeping the final IR/PD
  images so MagIR (``|IR|·a``) and the display-window mask come from the same reconstruction.
* :func:`forward_batch` — stacked inputs through the model and back to ``(y, x)`` arrays.

References
----------
PSIRNet: arXiv 2604.08781; github.com/microsoft/psirnet (MIT).
Sriram A et al. MICCAI 2020 (E2E VarNet); Kellman P et al. MRM 2002;47:372 (PSIR, SCC).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

from cmrecon.errors import StepError
from cmrecon.models.psirnet import PSIRNet
from cmrecon.products.lge import MappedKspace
from cmrecon.recon.fft import ifft2c as np_ifft2c
from cmrecon.recon.moco import choose_repeat
from cmrecon.recon.psir_head import psir_head_tensor, surface_coil_correction_map
from cmrecon.recon.sense import reduce as np_reduce

__all__ = ["SliceInput", "SliceOutput", "UnsupportedInput", "forward_batch", "prepare_slice",
           "psirnet_images", "as_psirnet"]


class UnsupportedInput(StepError):
    """An input outside what the model was trained for (coils, matrix, R): the step may fall back."""


def to_model(a: np.ndarray) -> np.ndarray:
    """``(…, y, x)`` → the model's ``(…, RO, PE)`` = ``(…, x, y)``, contiguous complex64."""
    return np.ascontiguousarray(np.swapaxes(a, -1, -2)).astype(np.complex64)


def from_model(t: torch.Tensor, dtype: type) -> np.ndarray:
    """The model's ``(RO, PE)`` tensor → a ``(y, x)`` array of ``dtype``."""
    return np.ascontiguousarray(t.T.cpu().numpy()).astype(dtype)


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
    return np_reduce(np_ifft2c(kspace), maps)[:, 0]


def prepare_slice(mk: MappedKspace, repeat: int = -1, roi_fraction: float = 0.5,
                  min_coils: int = 2, max_coils: int = 64, min_matrix: int = 16,
                  use_acs: bool = True) -> SliceInput:
    """Turn a buffered IR/PD slice with coil maps into the model's input.

    Parameters
    ----------
    mk : MappedKspace
        IR/PD k-space ``(repeats, coils, ky, kx)`` of every repeat with coil maps ``(coils, ky, kx)``.
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
    UnsupportedInput
        Coil count or matrix outside what the model accepts.
    StepError
        A repeat index out of range, or calibration that cannot synthesise the ACS rows.
    """
    sl = mk.kspace
    cal = sl.calibration
    where = f"slice {sl.info.slice}"
    ir_all, pd_all, maps = sl.ir, sl.pd, mk.maps.maps
    n_rep, coils, ky, kx = ir_all.shape
    if not min_coils <= coils <= max_coils:
        raise UnsupportedInput(f"{where}: {coils} coils is outside the accepted {min_coils}..{max_coils}")
    if min(ky, kx) < min_matrix:
        raise UnsupportedInput(f"{where}: matrix (RO {kx}, PE {ky}) is smaller than {min_matrix} pixels, "
                        f"the least the model's U-Net pooling accepts")
    if maps.shape != (coils, ky, kx):
        raise StepError(f"{where}: coil maps {maps.shape} do not match k-space "
                        f"{(coils, ky, kx)}")
    try:
        k = choose_repeat(_zero_filled_images(ir_all, maps) if repeat == -1 else ir_all, repeat,
                          roi_fraction)
    except ValueError as exc:
        raise StepError(f"{where}: {exc}") from exc
    rows = np.asarray(sl.mask_pe, bool).copy()
    ir_k = np.where(rows[None, :, None], ir_all[k], 0).astype(np.complex64)  # (coils, ky, kx)
    pd_k = np.where(rows[None, :, None], pd_all[k], 0).astype(np.complex64)
    own = cal.per_repeat
    if use_acs and own is not None and own.shape[-1] == kx:
        # embedded ACS: the calibration-only rows (off the R grid) of the chosen heartbeats
        # themselves (same contrast and position). The network was trained with the whole shot
        # (ACS included) as its input. Separate-shot calibration (own heartbeats, own contrast
        # and position) never enters the input: it only calibrates the coil maps.
        acs_rows = np.asarray(cal.rows, int)
        extra = [j for j, r in enumerate(acs_rows) if 0 <= r < ky and not rows[r]]
        if extra:
            ir_k[:, acs_rows[extra]] = own[0, k][:, extra]
            pd_k[:, acs_rows[extra]] = own[1, k][:, extra]
            rows[acs_rows[extra]] = True
    elif use_acs and cal.pd is not None and sl.acceleration > 1:
        # separate-shot calibration: the heartbeat itself has no ACS rows. Synthesise the rows
        # an embedded shot would carry from the heartbeat's own imaging rows (GRAPPA weights
        # fitted on the calibration block), so the input has the layout the model knows.
        from cmrecon.recon.grappa import grappa_fill, grappa_weights
        acs_rows = np.asarray(cal.rows, int)
        extra = np.array([r for r in acs_rows if 0 <= r < ky and not rows[r]], int)
        if extra.size and cal.pd.shape[-1] == kx:
            try:
                w = grappa_weights(cal.pd, int(sl.acceleration))
            except ValueError as exc:
                raise StepError(f"{where}: the calibration block cannot fit GRAPPA weights for "
                                f"the model's input: {exc}") from exc
            ir_k[:, extra] = grappa_fill(ir_k, rows, None, int(sl.acceleration), weights=w)[:, extra]
            pd_k[:, extra] = grappa_fill(pd_k, rows, None, int(sl.acceleration), weights=w)[:, extra]
            rows[extra] = True
    mask = np.broadcast_to(rows[None, None, :], (1, kx, ky)).copy()          # (1, RO, PE)
    return SliceInput(ir_kspace=to_model(ir_k), pd_kspace=to_model(pd_k), mask=mask,
                      sens_maps=to_model(maps), repeat=int(k))


def psirnet_images(model: torch.nn.Module, ir_kspace: torch.Tensor, pd_kspace: torch.Tensor,
                   mask: torch.Tensor, sens_maps: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward pass returning PSIR plus MagIR, the PD image, the SCC map and the PD phase.

    The images come from :meth:`PSIRNet.reconstruct` and the PSIR from the same head as its
    ``forward``. A module holding a PSIRNet's weights without being one (a TorchScript export
    such as the published ``PSIRNet.pt``, loaded with ``torch.jit.load``) is first rebuilt as a
    :class:`~cmrecon.models.psirnet.PSIRNet` sharing its tensors (:func:`as_psirnet`), so its
    MagIR and PD are the network's own images too, never ``|PSIR|``.

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
    model = as_psirnet(model)
    ir, pd = model.reconstruct(ir_kspace, pd_kspace, mask, sens_maps)
    psir = psir_head_tensor(ir, pd, model.window_px, model.reg, model.eps)
    pd_mag = pd.abs()
    scc = surface_coil_correction_map(pd_mag, model.window_px, model.reg)
    phase = pd / torch.sqrt(torch.clamp(pd_mag ** 2, min=model.eps))
    return psir, ir.abs() * scc, pd, scc, phase


#: PSIRNets rebuilt from other modules (TorchScript exports), per source module
_REBUILT: "weakref.WeakKeyDictionary[torch.nn.Module, PSIRNet]" = weakref.WeakKeyDictionary()


def as_psirnet(model: torch.nn.Module) -> PSIRNet:
    """``model`` as a :class:`~cmrecon.models.psirnet.PSIRNet` (itself when it is one).

    A module with a PSIRNet preset's parameter names and shapes (a ``torch.jit.script`` export
    of the upstream PSIRNet) is rebuilt as that preset, sharing the module's tensors (no copy;
    :func:`cmrecon.models.weights.copy_torchscript_state`); rebuilt once per module.

    Raises
    ------
    WeightsError
        The module's weights match no preset of :data:`cmrecon.models.psirnet.PRESETS`.
    """
    if isinstance(model, PSIRNet):
        return model
    if model in _REBUILT:
        return _REBUILT[model]
    from cmrecon.models.psirnet import PRESETS
    from cmrecon.models.weights import WeightsError, copy_torchscript_state
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name in PRESETS:
        with torch.device("meta"):
            eager = PSIRNet.from_preset(name)
        if {k: tuple(v.shape) for k, v in eager.state_dict().items()} == shapes:
            _REBUILT[model] = copy_torchscript_state(model, eager).eval()
            return _REBUILT[model]
    raise WeightsError(f"a {type(model).__name__} whose weights match no PSIRNet preset "
                       f"({', '.join(PRESETS)}): its IR/PD images, hence MagIR and PD, cannot be "
                       "formed; rebuild it with cmrecon.models.weights.load_published(path, config=...)")


def forward_batch(model: torch.nn.Module, device: torch.device,
                  inputs: Sequence[SliceInput]) -> List[SliceOutput]:
    """Stack ``inputs``, run :func:`psirnet_images` on ``device``, return ``(y, x)`` outputs."""
    stack = lambda name: torch.from_numpy(np.stack([getattr(s, name) for s in inputs])).to(device)  # noqa: E731
    with torch.inference_mode():
        psir, magir, pd, scc, phase = psirnet_images(
            model, stack("ir_kspace"), stack("pd_kspace"), stack("mask"), stack("sens_maps"))
    return [SliceOutput(psir=from_model(psir[i, 0], np.float32),
                        magir=from_model(magir[i, 0], np.float32),
                        pd=from_model(pd[i, 0], np.complex64), scc=from_model(scc[i, 0], np.float32),
                        phase=from_model(phase[i, 0], np.complex64)) for i in range(len(inputs))]
