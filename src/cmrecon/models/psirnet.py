"""PSIRNet-style unrolled network: undersampled IR/PD k-space → surface-coil-corrected PSIR.

Pipeline (one IR/PD pair per batch item):

1. ``sens_net``: a :class:`SensitivityModel` refines the given coil maps, one coil at a time
   through a 2-channel :class:`~cmrecon.models.unet.NormUnet`, then divides by their
   root-sum-of-squares so ``Σ_c |S_c|² = 1`` (identity when ``sens_chans == 0``).
2. Initial images: ``x⁰ = A^H y`` for IR and PD (coil combination of the zero-filled inverse
   FFT; ``A = M F S``, see :mod:`cmrecon.recon.operators`).
3. ``cascades``: ``num_cascades`` :class:`VarNetBlock` steps, each
   ``x ← x − |λ| A^H(A x − y) − R(x)`` for IR and PD with their own learned ``λ_IR``, ``λ_PD``
   (``ir_dc_weight``, ``pd_dc_weight``), and one joint 4-channel NormUnet regulariser ``R``
   acting on IR and PD together.
4. Head: :func:`cmrecon.recon.psir_head.psir_head_tensor` (parameter-free PSIR + SCC).

Module and parameter names follow microsoft/psirnet (``sens_net.norm_unet.unet...``,
``cascades.<i>.model.unet...``, ``cascades.<i>.ir_dc_weight``...), so the state dict of the
published TorchScript checkpoint loads into :class:`PSIRNet` built with the ``"published"``
preset (see :mod:`cmrecon.models.weights`).

References
----------
PSIRNet: arXiv 2604.08781; github.com/microsoft/psirnet (MIT).
Sriram A et al. End-to-end variational networks for accelerated MRI reconstruction.
MICCAI 2020.
Kellman P et al. MRM 2002;47:372 (PSIR and surface-coil correction).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Tuple

import torch
from torch import nn

from cmrecon.models.unet import JointNormUnet, NormUnet
from cmrecon.recon.operators import expand, fft2c, ifft2c, reduce
from cmrecon.recon.psir_head import psir_head_tensor

__all__ = ["PRESETS", "PSIRNet", "SensitivityModel", "VarNetBlock", "count_parameters"]

#: Named configurations. ``published`` is the microsoft/psirnet release (configs/psirnet.yaml:
#: 12 cascades, sens_chans 32, chans 96; pools and sens_pools at their default 4):
#: 845,426,378 parameters. ``cpu_small`` (5 cascades, 14 channels, 3 pools; sens 8 channels,
#: 3 pools) is sized for CPU training on 64²–192² slices: 1,963,624 parameters.
PRESETS: Dict[str, Dict[str, Any]] = {
    "published": dict(num_cascades=12, chans=96, sens_chans=32, pools=4, sens_pools=4),
    "cpu_small": dict(num_cascades=5, chans=14, sens_chans=8, pools=3, sens_pools=3),
}


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (works on the ``meta`` device)."""
    return sum(p.numel() for p in model.parameters())


class SensitivityModel(nn.Module):
    """Refine coil maps coil by coil with a NormUnet, then normalise them by their RSS.

    Parameters
    ----------
    chans : int
        First-level channels of the NormUnet.
    num_pools : int
        Pooling levels.
    in_chans, out_chans : int
        Real channels (2: Re/Im of one coil).
    drop_prob : float
        Dropout2d probability.
    """

    def __init__(self, chans: int, num_pools: int, in_chans: int = 2, out_chans: int = 2,
                 drop_prob: float = 0.0):
        super().__init__()
        self.norm_unet = NormUnet(chans, num_pools, in_chans=in_chans, out_chans=out_chans,
                                  drop_prob=drop_prob)

    def forward(self, sens_maps: torch.Tensor) -> torch.Tensor:
        """``(B, coils, RO, PE)`` complex maps → refined maps with ``Σ_c |S_c|² = 1``."""
        b, c, h, w = sens_maps.shape
        refined = self.norm_unet(sens_maps.reshape(b * c, 1, h, w)).reshape(b, c, h, w)
        rss = torch.sqrt(torch.sum(refined.abs() ** 2, dim=1, keepdim=True))
        return refined / rss


class VarNetBlock(nn.Module):
    """One cascade: soft data consistency for IR and PD, minus a joint learned regulariser.

    ``x_IR ← x_IR − |λ_IR| A^H(A x_IR − y_IR) − R_IR(x_IR, x_PD)`` and likewise for PD, with
    ``A = M F S`` (:func:`cmrecon.recon.operators.sense_operator`) and ``A^H`` its adjoint, so the
    data term is the gradient of ``½‖A x − y‖²``.

    Parameters
    ----------
    model : nn.Module
        Regulariser mapping ``(ir, pd)`` ``(B, 1, RO, PE)`` complex to two terms of the same
        shapes (a :class:`~cmrecon.models.unet.JointNormUnet`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.ir_dc_weight = nn.Parameter(torch.ones(1))
        self.pd_dc_weight = nn.Parameter(torch.ones(1))

    def forward(self, ir_image: torch.Tensor, pd_image: torch.Tensor, ir_kspace: torch.Tensor,
                pd_kspace: torch.Tensor, mask: torch.Tensor,
                sens_maps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Apply one cascade.

        Parameters
        ----------
        ir_image, pd_image : torch.Tensor
            ``(B, 1, RO, PE)`` complex current estimates, SNR units.
        ir_kspace, pd_kspace : torch.Tensor
            ``(B, coils, RO, PE)`` complex measured k-space (zero where not sampled).
        mask : torch.Tensor
            ``(B, 1, RO, PE)`` bool sampling mask.
        sens_maps : torch.Tensor
            ``(B, coils, RO, PE)`` complex, RSS-normalised coil maps.

        Returns
        -------
        tuple of torch.Tensor
            Updated ``(ir_image, pd_image)``, each ``(B, 1, RO, PE)`` complex.
        """
        zero = torch.zeros(1, 1, 1, 1, dtype=ir_kspace.dtype, device=ir_kspace.device)
        ir_resid = torch.where(mask, fft2c(expand(ir_image, sens_maps)) - ir_kspace, zero)
        pd_resid = torch.where(mask, fft2c(expand(pd_image, sens_maps)) - pd_kspace, zero)
        ir_dc = reduce(ifft2c(ir_resid), sens_maps) * torch.abs(self.ir_dc_weight)
        pd_dc = reduce(ifft2c(pd_resid), sens_maps) * torch.abs(self.pd_dc_weight)
        ir_reg, pd_reg = self.model(ir_image, pd_image)
        return ir_image - ir_dc - ir_reg, pd_image - pd_dc - pd_reg


class PSIRNet(nn.Module):
    """Unrolled IR/PD reconstruction with a parameter-free PSIR/SCC head.

    Parameters
    ----------
    num_cascades : int
        Number of data-consistency + regulariser cascades (12 published).
    chans : int
        First-level channels of each cascade's joint 4-channel NormUnet (96 published).
    sens_chans : int
        First-level channels of the sensitivity NormUnet (32 published); 0 disables the
        sensitivity refinement (maps are then used as given, not renormalised).
    pools : int
        Pooling levels of the cascade U-Nets (4).
    sens_pools : int
        Pooling levels of the sensitivity U-Net (4).
    eps : float
        Floor of |PD|² in the head (1e-6).
    drop_prob : float
        Dropout2d probability of all U-Nets (0 in the published model).
    window_px : int
        Odd box side of the head's surface-coil correction (7).
    reg : float
        SCC regulariser ``(t·σ)²``, SNR units squared (16).

    Notes
    -----
    The published constructor's positional order is ``(num_cascades, sens_chans, sens_pools,
    chans, pools, eps)``; ours differs, so pass arguments by keyword.
    """

    def __init__(self, num_cascades: int = 12, chans: int = 32, sens_chans: int = 16,
                 pools: int = 4, sens_pools: int = 4, eps: float = 1e-6,
                 drop_prob: float = 0.0, window_px: int = 7, reg: float = 16.0):
        super().__init__()
        if window_px < 1 or window_px % 2 == 0:
            raise ValueError(f"window_px must be a positive odd integer, got {window_px!r}")
        if num_cascades < 0 or chans < 1 or pools < 1 or sens_chans < 0 or sens_pools < 1:
            raise ValueError(
                f"invalid PSIRNet size: num_cascades={num_cascades}, chans={chans}, "
                f"pools={pools}, sens_chans={sens_chans}, sens_pools={sens_pools}")
        self._config: Dict[str, Any] = dict(
            num_cascades=num_cascades, chans=chans, sens_chans=sens_chans, pools=pools,
            sens_pools=sens_pools, eps=eps, drop_prob=drop_prob, window_px=window_px, reg=reg)
        self.eps = eps
        self.window_px = window_px
        self.reg = reg
        if sens_chans > 0:
            self.sens_net: nn.Module = SensitivityModel(sens_chans, sens_pools,
                                                        drop_prob=drop_prob)
        else:
            self.sens_net = nn.Identity()
        self.cascades = nn.ModuleList(
            [VarNetBlock(JointNormUnet(chans, pools, drop_prob=drop_prob))
             for _ in range(num_cascades)])

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PSIRNet":
        """Build a model from :data:`PRESETS` (``"published"``, ``"cpu_small"``).

        Parameters
        ----------
        name : str
            Preset name.
        **overrides
            Constructor arguments replacing the preset's.

        Raises
        ------
        KeyError
            If ``name`` is unknown; the message lists the known presets.
        """
        if name not in PRESETS:
            raise KeyError(f"unknown PSIRNet preset {name!r}; known: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "PSIRNet":
        """Rebuild a model from :meth:`model_config` output."""
        return cls(**config)

    def model_config(self) -> Dict[str, Any]:
        """Constructor arguments that rebuild this architecture: ``PSIRNet(**config)``."""
        return copy.deepcopy(self._config)

    def forward(self, ir_kspace: torch.Tensor, pd_kspace: torch.Tensor, mask: torch.Tensor,
                sens_maps: torch.Tensor) -> torch.Tensor:
        """Reconstruct surface-coil-corrected PSIR from one IR/PD k-space pair.

        Parameters
        ----------
        ir_kspace : torch.Tensor
            ``(B, coils, RO, PE)`` complex64 IR k-space, prewhitened (noise σ = 1), readout
            oversampling removed, zero where not sampled; centred (DC at ``n // 2``).
        pd_kspace : torch.Tensor
            ``(B, coils, RO, PE)`` complex64 PD k-space, same conventions.
        mask : torch.Tensor
            ``(B, 1, RO, PE)`` bool, True where sampled.
        sens_maps : torch.Tensor
            ``(B, coils, RO, PE)`` complex64 coil sensitivities (e.g. ESPIRiT/Inati).

        Returns
        -------
        torch.Tensor
            ``(B, 1, RO, PE)`` float32 PSIR (dimensionless IR/PD ratio, sign kept).
        """
        ir_image, pd_image = self.reconstruct(ir_kspace, pd_kspace, mask, sens_maps)
        return psir_head_tensor(ir_image, pd_image, self.window_px, self.reg, self.eps)

    def reconstruct(self, ir_kspace: torch.Tensor, pd_kspace: torch.Tensor, mask: torch.Tensor,
                    sens_maps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The final IR and PD images of the cascades, before the PSIR head.

        Parameters are those of :meth:`forward`.

        Returns
        -------
        ir_image, pd_image : ``(B, 1, RO, PE)`` complex64, SNR units.
        """
        sens_maps = self.sens_net(sens_maps)
        ir_image = reduce(ifft2c(ir_kspace), sens_maps)
        pd_image = reduce(ifft2c(pd_kspace), sens_maps)
        for cascade in self.cascades:
            ir_image, pd_image = cascade(ir_image, pd_image, ir_kspace, pd_kspace, mask,
                                         sens_maps)
        return ir_image, pd_image
