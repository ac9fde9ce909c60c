"""Training losses: ``1 − SSIM`` on target-range-scaled PSIR images, plus an optional L1 term."""

from __future__ import annotations

import torch

from cmrecon.metrics import ssim_valid
from cmrecon.models.train_config import LossSection

__all__ = ["ssim_loss", "training_loss"]


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, window_px: int = 7) -> torch.Tensor:
    """PSIRNet training loss ``1 − SSIM``, averaged over the batch.

    Both images are min–max scaled with the target's per-image range (floored at 1e-8), then
    SSIM (:func:`cmrecon.metrics.ssim_valid`, the formula of :func:`cmrecon.metrics.ssim`) is
    taken with ``data_range = 1`` and averaged over the pixels at least ``window_px // 2``
    from the border, per image, then over the batch.

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(B, 1, H, W)`` real PSIR (dimensionless).
    window_px : int
        Odd SSIM window side, pixels.

    Returns
    -------
    torch.Tensor
        Scalar loss in [0, 2], differentiable.

    References
    ----------
    PSIRNet, arXiv 2604.08781 (loss); Wang et al., IEEE TIP 2004;13:600 (SSIM).
    """
    pred, target = pred.float(), target.float()
    tmin = target.amin(dim=(1, 2, 3), keepdim=True)
    rng = torch.clamp(target.amax(dim=(1, 2, 3), keepdim=True) - tmin, min=1e-8)
    one = torch.ones((1, 1, 1, 1), dtype=pred.dtype, device=pred.device)  # data_range
    smap = ssim_valid((pred - tmin) / rng, (target - tmin) / rng, one, window_px)
    return 1.0 - smap.mean(dim=(1, 2, 3)).mean()


def training_loss(pred: torch.Tensor, target: torch.Tensor, loss: LossSection) -> torch.Tensor:
    """Weighted training loss ``ssim · (1 − SSIM) + l1 · mean|pred − target|``.

    SSIM on min–max scaled images barely sees a uniform shift of the ratio (its luminance term
    is weak), so an SSIM-only model can be biased in the very number a PSIR image reports; the
    L1 term anchors the scale (weight 0 = the published loss).

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(B, 1, H, W)`` real PSIR (dimensionless IR/PD ratio).
    loss : LossSection
        The weights (``loss`` section of the config).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    pred, target = pred.float(), target.float()
    total = loss.ssim * ssim_loss(pred, target)
    if loss.l1:
        total = total + loss.l1 * (pred - target).abs().mean()
    return total
