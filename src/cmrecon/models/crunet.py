"""CRUNet-style learned cine reconstruction: unrolled convolutional recurrent U-Net cascades.

:class:`CineCRUNet` reconstructs one cine slice, every cardiac phase together, from
undersampled multi-coil Cartesian k-space and given coil maps. Each cascade is a 2-level
(full and half resolution) convolutional recurrent U-Net over ``(t, y, x)``::

    conv 3×3 (2→C) → CRNN d1 (forward in time) ─────────────────────────────── skip ─┐
      → down (2+1)D: 2×2 stride-2 conv, temporal conv → CRNN d2 (forward) ─ skip ─┐    │
      → (2+1)D d2 → CRNN d4 (bidirectional) → (2+1)D d4                          │    │
      → CRNN d2 (backward) ⊕ skip → (2+1)D fuse → up (2+1)D: 2×2 transposed conv ─┘    │
      → CRNN d1 (backward) ⊕ skip → (2+1)D fuse → conv 5×5 (C→2) ──────────────────────┘

then a residual add to the cascade's input, and hard data consistency: the coil k-space of the
new image takes the measured samples on every sampled row (the released CRUNet's rule; no λ is
learned). ``d`` is the spatial dilation. A CRNN layer computes
``h_t = ReLU(W_i * x_t + W_h * h_{t∓1} + W_ih * h̃_t)`` where ``h̃_t`` is the same layer's
output in the previous cascade (hidden states carried across cascades, CRNN-i style; the first
cascade has no ``W_ih``: it would only ever see zeros). Every temporal convolution has
kernel 3 over ``(t − 1, t, t + 1)`` with **circular** padding (the cardiac cycle is periodic),
computed per case (``torch.roll`` along time): a batch never mixes cases.

Each cascade z-scores its input image (one mean and one standard deviation over the
``2·T·y·x`` real values of each case, undone after the residual add) and zero-pads ``y`` and
``x`` to a multiple of :data:`PAD_MULTIPLE` for the one 2× down/up-sampling; the padding is
cropped before data consistency. The last 5×5 convolution starts at zero, so an untrained
model returns the zero-filled SENSE combination passed through data consistency once per
cascade (a tested identity). No weights are shared between cascades.

Conventions: one centred orthonormal FFT (:mod:`cmrecon.recon.fft`), the SENSE pieces of
:mod:`cmrecon.recon.sense`, arrays as in :mod:`cmrecon.axes` (coils before ``(ky, kx)``).

References
----------
Lyu J et al. CRUNet-MR (Apache-2.0, github.com/dong845/CRUNet-MR): the topology, hard DC,
circular temporal padding, carried hidden states; re-implemented here, no code taken.
Qin C et al. Convolutional recurrent neural networks for dynamic MR image reconstruction.
IEEE TMI 2019;38:280-290 (CRNN-MRI).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cmrecon.recon.fft import fft2c, ifft2c
from cmrecon.recon.sense import expand, masked, reduce

__all__ = ["PAD_MULTIPLE", "CineCRUNet", "ConvRecurrent", "CRUNetCascade", "SpaceTime",
           "TemporalConv", "crunet_reconstruct", "data_consistency", "load_cine_crunet",
           "zero_filled"]

#: ``y`` and ``x`` are zero-padded to a multiple of this inside each cascade (one 2× level).
PAD_MULTIPLE = 2

Hidden = List[torch.Tensor]


def _frames(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D ``module`` to every frame of ``(B, T, C, H, W)`` (frames are independent)."""
    b, t = x.shape[:2]
    return module(x.flatten(0, 1)).unflatten(0, (b, t))


class TemporalConv(nn.Module):
    """Kernel-3 convolution along time with circular padding, ``(B, T, C, H, W)`` → same.

    Output frame ``t`` is a 1×1 convolution of frames ``t − 1, t, t + 1`` (indices mod ``T``)
    of the same case; the roll is per case, so a batch never mixes cases and rolling the input
    in time rolls the output.
    """

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3 * in_chans, out_chans, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, in_chans, H, W)`` → ``(B, T, out_chans, H, W)``."""
        return _frames(self.conv, torch.cat([x.roll(1, 1), x, x.roll(-1, 1)], dim=2))


class SpaceTime(nn.Module):
    """A (2+1)D block: a spatial convolution per frame, ReLU, then a circular temporal convolution.

    The temporal convolution stays linear (as CRUNet's): what follows is a recurrent layer's
    or a convolution's input, and a second ReLU here left whole blocks without gradient.

    Parameters
    ----------
    spatial : nn.Module
        2D layer applied to every frame (a 3×3 conv, a 2×2 stride-2 conv, a 2×2 transposed conv).
    chans : int
        Its output channels (and the temporal convolution's).
    """

    def __init__(self, spatial: nn.Module, chans: int) -> None:
        super().__init__()
        self.spatial = spatial
        self.temporal = TemporalConv(chans, chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C_in, H, W)`` → ``(B, T, C, H', W')``."""
        return self.temporal(F.relu(_frames(self.spatial, x)))


def _conv3(chans_in: int, chans_out: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(chans_in, chans_out, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvRecurrent(nn.Module):
    """A convolutional recurrent layer over time: ``h_t = ReLU(W_i*x_t + W_h*h_{t∓1} + W_ih*h̃_t)``.

    Parameters
    ----------
    chans : int
        Input, hidden and output channels.
    dilation : int
        Spatial dilation of the three 3×3 convolutions.
    direction : {"forward", "backward", "both"}
        Recurrence order in time; ``both`` runs each way (own ``W_h``) and sums the two.
    carries : bool
        Whether the layer takes its previous cascade's output ``h̃`` (``W_ih``, no bias).
    """

    def __init__(self, chans: int, dilation: int, direction: str, carries: bool) -> None:
        super().__init__()
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"direction = {direction!r}; one of forward, backward, both")
        self.direction = direction
        self.conv_i = _conv3(chans, chans, dilation)
        n = 2 if direction == "both" else 1
        self.conv_h = nn.ModuleList(_conv3(chans, chans, dilation, bias=False) for _ in range(n))
        self.conv_ih = _conv3(chans, chans, dilation, bias=False) if carries else None

    def _run(self, drive: torch.Tensor, conv_h: nn.Module, reverse: bool) -> torch.Tensor:
        steps = range(drive.shape[1] - 1, -1, -1) if reverse else range(drive.shape[1])
        out: List[Optional[torch.Tensor]] = [None] * drive.shape[1]
        h: Optional[torch.Tensor] = None
        for t in steps:
            h = F.relu(drive[:, t] if h is None else drive[:, t] + conv_h(h))
            out[t] = h
        return torch.stack(out, dim=1)   # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, carried: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, T, C, H, W)`` (and the previous cascade's output, same shape) → ``(B, T, C, H, W)``."""
        drive = _frames(self.conv_i, x)
        if self.conv_ih is not None:
            if carried is None:
                raise ValueError("this layer carries hidden states: pass the previous cascade's")
            drive = drive + _frames(self.conv_ih, carried)
        if self.direction == "forward":
            return self._run(drive, self.conv_h[0], reverse=False)
        if self.direction == "backward":
            return self._run(drive, self.conv_h[0], reverse=True)
        return self._run(drive, self.conv_h[0], False) + self._run(drive, self.conv_h[1], True)


class CRUNetCascade(nn.Module):
    """One cascade's regulariser: the recurrent 2-level U-Net on a z-scored image, residual.

    Parameters
    ----------
    chans : int
        Feature channels C at both levels.
    carries : bool
        Whether its recurrent layers take the previous cascade's hidden states (all but the first).
    """

    def __init__(self, chans: int, carries: bool) -> None:
        super().__init__()
        c = int(chans)
        self.conv_in = _conv3(2, c)
        self.rnn_d1 = ConvRecurrent(c, 1, "forward", carries)
        self.down = SpaceTime(nn.Conv2d(c, c, 2, stride=2), c)
        self.rnn_d2 = ConvRecurrent(c, 2, "forward", carries)
        self.mid_d2 = SpaceTime(_conv3(c, c, 2), c)
        self.rnn_d4 = ConvRecurrent(c, 4, "both", carries)
        self.mid_d4 = SpaceTime(_conv3(c, c, 4), c)
        self.rnn_up_d2 = ConvRecurrent(c, 2, "backward", carries)
        self.fuse_d2 = SpaceTime(_conv3(2 * c, c), c)
        self.up = SpaceTime(nn.ConvTranspose2d(c, c, 2, stride=2), c)
        self.rnn_up_d1 = ConvRecurrent(c, 1, "backward", carries)
        self.fuse_d1 = SpaceTime(_conv3(2 * c, c), c)
        self.conv_out = nn.Conv2d(c, 2, 5, padding=2)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, image: torch.Tensor, hidden: Optional[Hidden]) -> tuple[torch.Tensor, Hidden]:
        """Refine ``image`` ``(B, T, y, x)`` complex64; returns it and this cascade's 5 hidden states.

        ``hidden``: the previous cascade's states (None for the first cascade), each
        ``(B, T, C, y', x')`` on the padded grid (full, half, half, half, full resolution).
        """
        x = torch.view_as_real(image).permute(0, 1, 4, 2, 3)          # (B, T, 2, y, x)
        mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
        std = x.std(dim=(1, 2, 3, 4), keepdim=True, unbiased=False).clamp(min=1e-6)
        xn = (x - mean) / std
        ny, nx = xn.shape[-2:]
        py, px = (-ny) % PAD_MULTIPLE, (-nx) % PAD_MULTIPLE
        xp = F.pad(xn, (0, px, 0, py)) if (py or px) else xn
        h = hidden if hidden is not None else [None] * 5

        e1 = self.rnn_d1(F.relu(_frames(self.conv_in, xp)), h[0])
        e2 = self.rnn_d2(self.down(e1), h[1])
        m4 = self.rnn_d4(self.mid_d2(e2), h[2])
        u2 = self.rnn_up_d2(self.mid_d4(m4), h[3])
        u1 = self.rnn_up_d1(self.up(self.fuse_d2(torch.cat([u2, e2], dim=2))), h[4])
        out = _frames(self.conv_out, self.fuse_d1(torch.cat([u1, e1], dim=2)))

        y = (xn + out[..., :ny, :nx]) * std + mean
        refined = torch.view_as_complex(y.permute(0, 1, 3, 4, 2).contiguous())
        return refined, [e1, e2, m4, u2, u1]


def zero_filled(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-filled SENSE combination ``Σ_c conj(S_c) F^H M k_c`` of every phase.

    Parameters
    ----------
    kspace : (B, T, C, ky, kx) complex64
    maps : (B, C, ky, kx) complex64, ``Σ_c |S_c|² = 1``
    mask : (B, T, ky) bool, sampled rows

    Returns
    -------
    (B, T, ky, kx) complex64
    """
    k0 = masked(kspace, mask[:, :, None, :, None])
    return reduce(ifft2c(k0), maps[:, None])[:, :, 0]


def data_consistency(kspace_pred: torch.Tensor, kspace0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hard data consistency: measured samples on sampled rows, the prediction elsewhere.

    Parameters
    ----------
    kspace_pred, kspace0 : (B, T, C, ky, kx) complex64
        Coil k-space of the current estimate, and the measured k-space.
    mask : (B, T, ky) bool

    Returns
    -------
    (B, T, C, ky, kx) complex64, exactly ``kspace0`` on sampled rows.
    """
    return torch.where(mask[:, :, None, :, None], kspace0, kspace_pred)


class CineCRUNet(nn.Module):
    """Unrolled CRUNet-style cascades with hard data consistency (see the module docstring).

    Parameters
    ----------
    chans : int
        Feature channels of every cascade.
    num_cascades : int
        Unrolled cascades (no weight sharing).
    """

    def __init__(self, chans: int = 16, num_cascades: int = 4) -> None:
        super().__init__()
        if chans < 1 or num_cascades < 1:
            raise ValueError(f"chans = {chans}, num_cascades = {num_cascades}: both must be ≥ 1")
        self.chans, self.num_cascades = int(chans), int(num_cascades)
        self.cascades = nn.ModuleList(CRUNetCascade(self.chans, carries=i > 0)
                                      for i in range(self.num_cascades))

    def model_config(self) -> Dict[str, Any]:
        """Constructor arguments (what a checkpoint stores)."""
        return {"chans": self.chans, "num_cascades": self.num_cascades}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "CineCRUNet":
        """Rebuild from :meth:`model_config`."""
        return cls(**config)

    def forward(self, kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reconstruct every phase of a batch of cine slices.

        Parameters
        ----------
        kspace : (B, T, C, ky, kx) complex64
            Prewhitened k-space in SNR units; entries on unsampled rows are ignored.
        maps : (B, C, ky, kx) complex64
            Coil maps, ``Σ_c |S_c|² = 1``.
        mask : (B, T, ky) bool
            Rows sampled in each phase.

        Returns
        -------
        (B, T, ky, kx) complex64
            Coil-combined images in SNR units, on the k-space grid.
        """
        if kspace.ndim != 5 or maps.ndim != 4 or mask.ndim != 3:
            raise ValueError(f"expected kspace (B, T, C, ky, kx), maps (B, C, ky, kx), mask "
                             f"(B, T, ky); got {tuple(kspace.shape)}, {tuple(maps.shape)}, "
                             f"{tuple(mask.shape)}")
        mask = mask.to(torch.bool)
        k0 = masked(kspace, mask[:, :, None, :, None])
        smaps = maps[:, None]                                          # (B, 1, C, ky, kx)
        image = reduce(ifft2c(k0), smaps)[:, :, 0]
        hidden: Optional[Hidden] = None
        for cascade in self.cascades:
            image, hidden = cascade(image, hidden)
            k = data_consistency(fft2c(expand(image[:, :, None], smaps)), k0, mask)
            image = reduce(ifft2c(k), smaps)[:, :, 0]
        return image


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def crunet_reconstruct(model: CineCRUNet, kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray,
                       device: Union[str, torch.device] = "cpu") -> np.ndarray:
    """One cine slice through ``model``: numpy in, numpy out (no gradients).

    Parameters
    ----------
    model : CineCRUNet
        In eval mode, on ``device``.
    kspace : (T, C, ky, kx) complex64
        Prewhitened, zero-filled k-space (a :class:`cmrecon.products.cine.CineKspace`'s).
    maps : (C, ky, kx) complex64
        Unit-norm coil maps.
    mask : (T, ky) bool
        Sampled rows per phase.
    device : str or torch.device

    Returns
    -------
    (T, ky, kx) complex64
        Images in SNR units on the k-space grid (crop to the recon matrix with
        :func:`cmrecon.axes.centre_crop`).
    """
    dev = torch.device(device)
    k = torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64))[None].to(dev)
    s = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.complex64))[None].to(dev)
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None].to(dev)
    with torch.inference_mode():
        out = model(k, s, m)
    return out[0].cpu().numpy().astype(np.complex64, copy=False)


def load_cine_crunet(weights: Union[str, os.PathLike], expected_sha256: Optional[str] = None,
                     map_location: Union[str, torch.device] = "cpu"):
    """Shipped cine CRUNet weights (a :data:`~cmrecon.models.shipped.SHIPPED` name) or a
    checkpoint file, verified before anything is deserialised; the model in eval mode.

    :func:`cmrecon.models.weights.load_checkpoint` with the registry's digest for a shipped name:
    the file's sha256 must equal that (or ``expected_sha256``) and the ``.sha256`` sidecar,
    whichever exist (at least one must); the checkpoint must hold a :class:`CineCRUNet`. (The
    chain step loads through :func:`cmrecon.models.serving.get_model`, the same checks.)

    Parameters
    ----------
    weights : str or PathLike
        Shipped name (e.g. ``"cine_crunet_cpu"``) or path. Trusted: a chain's ``weights``
        parameter goes through :func:`~cmrecon.models.shipped.resolve_chain_weights` first.
    expected_sha256 : str, optional
    map_location : str or torch.device

    Returns
    -------
    cmrecon.models.weights.LoadedCheckpoint
        ``model`` (:class:`CineCRUNet`, eval mode), ``config``, ``metrics``, ``sha256``.

    Raises
    ------
    ChecksumMismatchError
        A digest differs.
    WeightsError
        Missing file, nothing to verify against, another format or model class, weights not
        matching the config, or a shipped entry whose architecture differs from the registry's.
    """
    from cmrecon.models.shipped import SHIPPED, resolve_weights
    from cmrecon.models.weights import WeightsError, load_checkpoint

    path, registry_sha = resolve_weights(weights)
    if registry_sha and expected_sha256 and registry_sha.lower() != expected_sha256.lower():
        raise WeightsError(f"weights={str(weights)!r}: expected_sha256 differs from the registry's")
    loaded = load_checkpoint(path, expected_sha256=expected_sha256 or registry_sha, map_location=map_location)
    if not isinstance(loaded.model, CineCRUNet):
        raise WeightsError(f"path={str(path)!r} holds a {type(loaded.model).__name__}, not a CineCRUNet")
    name = str(weights)
    if name in SHIPPED and SHIPPED[name]["config"] != loaded.config:
        raise WeightsError(f"shipped weights {name!r}: architecture {loaded.config} differs from the "
                           f"registry's {SHIPPED[name]['config']}")
    return loaded
