"""A learned PSIR that starts where classical ends: residual refinement of GRAPPA IR/PD images.

The network sees the classical single-shot estimate of the key-frame repeat — IR and PD images
after the chain's own GRAPPA (or SENSE) and Inati coil maps, coil-combined in SNR units — and
adds a learned correction to each::

    IR' = IR + U_ir(IR, PD),   PD' = PD + U_pd(IR, PD),   PSIR = head(g·IR', g·PD')

``U`` is a small U-Net (4 real channels: Re/Im of IR and PD, divided by a robust per-image scale
and multiplied back) whose last layer is **zero at initialisation**, so the untrained model is
exactly the PSIRNet head on the classical images, and training can only move it where that
lowers the loss. ``head`` is the PSIRNet surface-coil-corrected PSIR head
(:func:`cmrecon.recon.psir_head.psir_head_tensor`) and ``g = √K`` the signal gain of the K-repeat
MOCO average the targets are defined at (K = 4 for 8 repeats, docs/physics.md §6).

Axis convention here and in the training data: images ``(B, 1, y, x)`` with y = PE, x = RO, as
the chains' unfolded images.

References
----------
PSIRNet, arXiv 2604.08781. Ronneberger O et al., MICCAI 2015 (U-Net); Zbontar J et al.,
fastMRI, arXiv 1811.08839 (the U-Net variant). Kellman P et al. MRM 2002;47:372 (PSIR).
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch
from torch import nn

from cmrecon.models.unet import Unet, pad_to_multiple, unpad
from cmrecon.recon.psir_head import psir_head_tensor

__all__ = ["PsirRefine", "classical_images", "make_refine_sample"]


class PsirRefine(nn.Module):
    """Zero-initialised residual U-Net on classical IR/PD images, then the PSIRNet head.

    Parameters
    ----------
    chans : int
        First-level U-Net channels.
    pools : int
        U-Net pooling levels.
    gain : float
        Signal gain applied before the head (√K of the MOCO target).
    window_px, reg : head parameters (odd box side, regulariser (t·σ)²).
    """

    def __init__(self, chans: int = 16, pools: int = 3, gain: float = 2.0, window_px: int = 7,
                 reg: float = 16.0) -> None:
        super().__init__()
        self.chans, self.pools, self.gain = int(chans), int(pools), float(gain)
        self.window_px, self.reg = int(window_px), float(reg)
        self.unet = Unet(4, 4, self.chans, self.pools)
        last = self.unet.up_conv[-1][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def model_config(self) -> Dict[str, Any]:
        """Constructor arguments (what a checkpoint stores)."""
        return {"chans": self.chans, "pools": self.pools, "gain": self.gain,
                "window_px": self.window_px, "reg": self.reg}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "PsirRefine":
        """Rebuild from :meth:`model_config`."""
        return cls(**config)

    def refine(self, ir: torch.Tensor, pd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined ``(IR', PD')``, both ``(B, 1, y, x)`` complex64, SNR units."""
        scale = torch.quantile(pd.abs().flatten(1), 0.99, dim=1).clamp(min=1.0).detach()
        scale = scale[:, None, None, None]
        x = torch.cat([ir.real, ir.imag, pd.real, pd.imag], dim=1) / scale
        x, pads = pad_to_multiple(x, 2 ** self.pools)
        d = unpad(self.unet(x), pads) * scale
        return (ir + torch.complex(d[:, 0:1], d[:, 1:2]), pd + torch.complex(d[:, 2:3], d[:, 3:4]))

    def forward(self, ir: torch.Tensor, pd: torch.Tensor) -> torch.Tensor:
        """``(B, 1, y, x)`` complex IR and PD → ``(B, 1, y, x)`` float32 PSIR."""
        ir2, pd2 = self.refine(ir, pd)
        return psir_head_tensor(ir2 * self.gain, pd2 * self.gain, self.window_px, self.reg)


def classical_images(ir_k: np.ndarray, pd_k: np.ndarray, mask_pe: np.ndarray, R: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chain's classical single-shot IR/PD images: Inati maps from the PD ACS, GRAPPA, combine.

    Parameters
    ----------
    ir_k, pd_k : (coils, ky, kx) complex64
        Prewhitened k-space of one IR/PD pair, zero where not sampled (ky = PE).
    mask_pe : (ky,) bool
        Sampled rows (embedded ACS included: the central fully sampled block calibrates).
    R : int

    Returns
    -------
    ir, pd : (ky, kx) complex64, SNR units; maps : (coils, ky, kx) complex64
    """
    from cmrecon.recon.buffer import acs_block
    from cmrecon.recon.unfold import calibration_block, estimate_maps, unfold
    coils, ky, kx = ir_k.shape
    acs_pd, _ = acs_block(pd_k, mask_pe.astype(np.int32))
    maps = estimate_maps(calibration_block(acs_pd, pd_k[None], mask_pe), (ky, kx), "inati")
    ir, pd = unfold(ir_k[None], pd_k[None], maps, mask_pe, int(R), acs_pd)
    return ir[0], pd[0], maps


def make_refine_sample(rng: np.random.Generator, **kwargs: Any) -> dict:
    """One training sample: classical IR/PD images of a simulated shot and its PSIR target.

    ``kwargs`` go to :func:`cmrecon.sim.training.make_sample` (matrix, coils, R, SNR, K...).

    Returns
    -------
    dict
        ``ir``, ``pd`` (1, y, x) complex64; ``target`` (1, y, x) float32 (the noise-free MOCO
        target, y = PE); ``heart``, ``body`` (1, y, x) bool; ``snr``, ``R``.
    """
    from cmrecon.sim.training import make_sample
    s = make_sample(rng, **kwargs)
    t = lambda a: np.ascontiguousarray(np.swapaxes(a, -1, -2))  # noqa: E731  (…, RO, PE) → (…, PE, RO)
    mask_pe = np.asarray(s["mask"][0]).any(axis=0)
    ir, pd, _ = classical_images(t(s["ir_kspace"]), t(s["pd_kspace"]), mask_pe, int(s["acceleration"]))
    return {"ir": ir[None], "pd": pd[None], "target": t(s["target_clean"]),
            "heart": t(s["heart_mask"]), "body": t(s["body_mask"]),
            "snr": float(s["snr"]), "R": int(s["acceleration"])}


#: protocol of the training samples (held-out evaluation: bench/eval_keyframe.py)
TRAIN_PROTOCOL = dict(size=(128, 96), coils=(8, 20), R=(1, 2, 2, 3, 3), acs_lines=24,
                      partial_fourier=(1.0, 0.875), snr=(6.0, 40.0), moco_repeats=(4, 4))


def _batch(samples: list, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
    stack = lambda k: torch.from_numpy(np.stack([samples[i][k] for i in idx]))  # noqa: E731
    heart, body = stack("heart").float(), stack("body").float()
    return stack("ir"), stack("pd"), stack("target"), body + 3.0 * heart


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean ``w·|pred − target|`` over ``Σw`` (body 1, heart 4): the PSIR ratio itself."""
    return (weight * (pred - target).abs()).sum() / weight.sum().clamp(min=1.0)


def _heart_nrmse(pred: np.ndarray, target: np.ndarray, heart: np.ndarray) -> float:
    d = (pred - target)[heart]
    return float(np.sqrt((d ** 2).sum() / max((target[heart] ** 2).sum(), 1e-12)))


def train_refine(out_dir: str, n_train: int = 800, n_val: int = 48, minutes: float = 25.0,
                 batch: int = 4, lr: float = 1e-3, seed: int = 2026, chans: int = 16,
                 pools: int = 3, threads: int = 1, say=print) -> dict:
    """Train :class:`PsirRefine` on simulated shots for a wall-clock budget; keep the best.

    Samples: :func:`make_refine_sample` with :data:`TRAIN_PROTOCOL` (seeds ``seed`` for
    training, ``seed + 1`` for validation: never the evaluation seeds). Loss
    :func:`weighted_l1`. After every epoch the validation heart NRMSE is compared with the
    untrained model's (= the PSIRNet head on the classical images); ``best.pt`` (+ sidecar) is
    the best epoch.

    Returns
    -------
    dict
        Metrics of the best epoch and the run.
    """
    import time
    from pathlib import Path

    from cmrecon.models.weights import save_checkpoint
    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def draw(s: int, n: int, what: str) -> list:
        rngs = [np.random.default_rng(c) for c in np.random.SeedSequence(s).spawn(n)]
        got = []
        for i, r in enumerate(rngs):
            got.append(make_refine_sample(r, **TRAIN_PROTOCOL))
            if (i + 1) % 50 == 0 or i + 1 == n:
                say(f"refine: {what} samples {i + 1}/{n} ({time.perf_counter() - t0:.0f} s)")
        return got

    train, val = draw(seed, n_train, "training"), draw(seed + 1, n_val, "validation")
    model = PsirRefine(chans, pools)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)

    def validate() -> float:
        model.eval()
        errs = []
        with torch.no_grad():
            for s in val:
                p = model(torch.from_numpy(s["ir"])[None], torch.from_numpy(s["pd"])[None])
                errs.append(_heart_nrmse(p[0, 0].numpy(), s["target"][0], s["heart"][0]))
        model.train()
        return float(np.median(errs))

    base = validate()
    best = {"val_heart_nrmse": base, "epoch": 0}
    say(f"refine: untrained (classical images through the head) validation heart NRMSE {base:.4f}")
    rng = np.random.default_rng(seed + 2)
    budget = minutes * 60.0
    epoch = 0
    while time.perf_counter() - t0 < budget:
        epoch += 1
        order = rng.permutation(len(train))
        losses = []
        for j in range(0, len(order) - batch + 1, batch):
            ir, pd, target, w = _batch(train, order[j:j + batch])
            loss = weighted_l1(model(ir, pd), target, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if time.perf_counter() - t0 > budget:
                break
        v = validate()
        say(f"refine: epoch {epoch} loss {np.mean(losses):.4f} validation heart NRMSE {v:.4f} "
            f"({v / base:.3f} of untrained) {time.perf_counter() - t0:.0f} s")
        if v < best["val_heart_nrmse"]:
            best = {"val_heart_nrmse": v, "epoch": epoch}
            save_checkpoint(out / "best.pt", model, model.model_config(),
                            {"val_heart_nrmse": v, "val_heart_nrmse_untrained": base, "epoch": epoch})
    best.update(untrained=base, epochs=epoch, seconds=time.perf_counter() - t0, n_train=n_train)
    say(f"refine: best epoch {best['epoch']}: {best['val_heart_nrmse']:.4f} vs untrained {base:.4f}")
    return best
