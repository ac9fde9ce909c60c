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

from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from cmrecon.models.unet import Unet, pad_to_multiple, unpad
from cmrecon.recon.psir_head import psir_head_tensor

__all__ = ["PsirRefine", "classical_images", "make_refine_sample"]

#: how far (relative) outside the trained matrices an image axis may lie before the step falls back
MATRIX_TOLERANCE = 0.25


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
    noise_channel : bool
        Give the U-Net a fifth input channel, the noise level of its scaled input (``10/s`` for
        the per-image scale ``s``; σ = 1 in SNR units): without it the scaling hides how noisy
        the image is, so the network cannot tell a noisy shot it should clean from a clean one
        it should leave alone (FFDNet's noise-level map, Zhang et al. IEEE TIP 2018;27:4608).
    trained_sizes : list of (PE, RO), optional
        Image matrices the weights were trained on (default: 96×128, the first model's).
    max_acceleration : int
        Highest R the weights were trained on.
    """

    def __init__(self, chans: int = 16, pools: int = 3, gain: float = 2.0, window_px: int = 7,
                 reg: float = 16.0, noise_channel: bool = False,
                 trained_sizes: Optional[Sequence[Sequence[int]]] = None,
                 max_acceleration: int = 3) -> None:
        super().__init__()
        self.chans, self.pools, self.gain = int(chans), int(pools), float(gain)
        self.window_px, self.reg = int(window_px), float(reg)
        self.noise_channel = bool(noise_channel)
        self.trained_sizes = [list(map(int, t)) for t in (trained_sizes or [[96, 128]])]
        self.max_acceleration = int(max_acceleration)
        self.unet = Unet(5 if self.noise_channel else 4, 4, self.chans, self.pools)
        last = self.unet.up_conv[-1][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def model_config(self) -> Dict[str, Any]:
        """Constructor arguments (what a checkpoint stores)."""
        return {"chans": self.chans, "pools": self.pools, "gain": self.gain,
                "window_px": self.window_px, "reg": self.reg, "noise_channel": self.noise_channel,
                "trained_sizes": self.trained_sizes, "max_acceleration": self.max_acceleration}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "PsirRefine":
        """Rebuild from :meth:`model_config` (a first-generation config lacks the last three)."""
        return cls(**config)

    def unsupported(self, shape_yx: Sequence[int], acceleration: int) -> Optional[str]:
        """Why an input of image matrix ``shape_yx`` (PE, RO) at R = ``acceleration`` is outside
        what the weights were trained on, or ``None``.

        A matrix axis may lie within ±:data:`MATRIX_TOLERANCE` of the smallest and largest
        trained size on that axis: the U-Net is convolutional, but anatomy measured in pixels,
        aliasing period and noise texture change with the matrix.
        """
        if int(acceleration) > self.max_acceleration:
            return (f"R = {int(acceleration)} is above the R <= {self.max_acceleration} the weights "
                    "were trained on")
        for axis, name in ((0, "PE"), (1, "RO")):
            lo = min(t[axis] for t in self.trained_sizes) * (1 - MATRIX_TOLERANCE)
            hi = max(t[axis] for t in self.trained_sizes) * (1 + MATRIX_TOLERANCE)
            if not lo <= int(shape_yx[axis]) <= hi:
                sizes = ", ".join(f"{t[1]}x{t[0]}" for t in self.trained_sizes)
                return (f"matrix {int(shape_yx[1])}x{int(shape_yx[0])} (RO x PE) is outside the "
                        f"weights' training matrices ({sizes}, {name} within "
                        f"{100 * MATRIX_TOLERANCE:.0f} %)")
        return None

    def refine(self, ir: torch.Tensor, pd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined ``(IR', PD')``, both ``(B, 1, y, x)`` complex64, SNR units."""
        scale = torch.quantile(pd.abs().flatten(1), 0.99, dim=1).clamp(min=1.0).detach()
        scale = scale[:, None, None, None]
        parts = [ir.real, ir.imag, pd.real, pd.imag]
        x = torch.cat(parts, dim=1) / scale
        if self.noise_channel:
            x = torch.cat([x, (10.0 / scale).expand_as(ir.real)], dim=1)
        x, pads = pad_to_multiple(x, 2 ** self.pools)
        d = unpad(self.unet(x), pads).to(scale.dtype) * scale   # float32 also under bf16 autocast
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


def make_refine_sample(rng: np.random.Generator, sizes: Optional[Sequence[Sequence[int]]] = None,
                       with_labels: bool = False, **kwargs: Any) -> dict:
    """One training sample: classical IR/PD images of a simulated shot and its PSIR target.

    ``sizes`` (a list of (RO, PE) matrices) draws the matrix from ``rng`` first; ``kwargs`` go to
    :func:`cmrecon.sim.training.make_sample` (matrix, coils, R, SNR, K...).

    Returns
    -------
    dict
        ``ir``, ``pd`` (1, y, x) complex64; ``target`` (1, y, x) float32 (the noise-free MOCO
        target, y = PE); ``heart``, ``body`` (1, y, x) bool; ``snr``, ``R``; with ``with_labels``
        also ``labels`` (1, y, x) uint8 (:mod:`cmrecon.sim.phantom` tissue labels).
    """
    from cmrecon.sim.training import make_sample
    if sizes is not None:
        kwargs["size"] = tuple(sizes[int(rng.integers(len(sizes)))])
    s = make_sample(rng, **kwargs)
    t = lambda a: np.ascontiguousarray(np.swapaxes(a, -1, -2))  # noqa: E731  (…, RO, PE) → (…, PE, RO)
    mask_pe = np.asarray(s["mask"][0]).any(axis=0)
    ir, pd, _ = classical_images(t(s["ir_kspace"]), t(s["pd_kspace"]), mask_pe, int(s["acceleration"]))
    out = {"ir": ir[None], "pd": pd[None], "target": t(s["target_clean"]),
           "heart": t(s["heart_mask"]), "body": t(s["body_mask"]),
           "snr": float(s["snr"]), "R": int(s["acceleration"])}
    if with_labels:
        out["labels"] = t(s["labels"])[None]
    return out


#: protocol of the first training run (psir_refine_cpu; held-out: bench/eval_keyframe.py)
TRAIN_PROTOCOL_V1 = dict(size=(128, 96), coils=(8, 20), R=(1, 2, 2, 3, 3), acs_lines=24,
                         partial_fourier=(1.0, 0.875), snr=(6.0, 40.0), moco_repeats=(4, 4))
#: protocol of the training samples: R 1-3 equally, (RO, PE) matrices from the CI streams' 64×48
#: to 128×96 (half the samples at 128×96), noise from PD SNR 6 to 40
TRAIN_PROTOCOL = dict(sizes=((128, 96), (128, 96), (96, 72), (64, 48)), coils=(8, 20),
                      R=(1, 1, 2, 2, 3, 3), acs_lines=24, partial_fourier=(1.0, 0.875),
                      snr=(6.0, 40.0), moco_repeats=(4, 4))


#: protocols by name (``cmrecon train refine --protocol``)
PROTOCOLS = {"v1": TRAIN_PROTOCOL_V1, "v2": TRAIN_PROTOCOL}


def _draw_one(args: tuple) -> dict:
    """:func:`make_refine_sample` for a worker process: ``(seed sequence, protocol)``."""
    seq, protocol = args
    return make_refine_sample(np.random.default_rng(seq), **protocol)


def draw_samples(seed: int, n: int, protocol: Dict[str, Any], workers: int = 1, say=None) -> list:
    """``n`` samples from ``SeedSequence(seed)``'s children, in order (same for any ``workers``)."""
    seqs = np.random.SeedSequence(seed).spawn(n)
    jobs = [(q, protocol) for q in seqs]
    if workers <= 1:
        it = map(_draw_one, jobs)
        pool = None
    else:
        import multiprocessing as mp
        pool = mp.get_context("fork").Pool(workers)
        it = pool.imap(_draw_one, jobs, chunksize=4)
    got = []
    try:
        for i, sample in enumerate(it):
            got.append(sample)
            if say is not None and ((i + 1) % 50 == 0 or i + 1 == n):
                say(f"{i + 1}/{n}")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return got


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


def _batches(samples: list, rng: np.random.Generator, batch: int) -> list:
    """Shuffled index batches, each of one image size (samples of several matrices stack per size)."""
    groups: Dict[tuple, list] = {}
    for i in rng.permutation(len(samples)):
        groups.setdefault(samples[i]["ir"].shape, []).append(int(i))
    out = [np.array(g[j:j + batch]) for g in groups.values() for j in range(0, len(g) - batch + 1, batch)]
    return [out[i] for i in rng.permutation(len(out))]


def _first_layer_from(model: PsirRefine, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` of a 4-input-channel model fitted to ``model``: the noise channel's weights zero."""
    own = model.state_dict()
    fitted = {}
    for k, v in state.items():
        if k in own and own[k].shape != v.shape and v.ndim == 4 and own[k].shape[1] == v.shape[1] + 1:
            v = torch.cat([v, torch.zeros_like(v[:, :1])], dim=1)
        fitted[k] = v
    return fitted


def train_refine(out_dir: str, n_train: int = 800, n_val: int = 48, minutes: float = 25.0,
                 batch: int = 4, lr: float = 1e-3, seed: int = 2026, chans: int = 16,
                 pools: int = 3, threads: int = 1, say=print, device: str = "cpu", workers: int = 1,
                 init: Optional[str] = None, noise_channel: bool = True,
                 protocol: Optional[Dict[str, Any]] = None) -> dict:
    """Train :class:`PsirRefine` on simulated shots for a wall-clock budget; keep the best.

    Samples: :func:`make_refine_sample` with ``protocol`` (default :data:`TRAIN_PROTOCOL`; seeds
    ``seed`` for training, ``seed + 1`` for validation: never the evaluation seeds), drawn by
    ``workers`` processes. Loss :func:`weighted_l1`. ``init`` starts from a PsirRefine checkpoint
    (a model without the noise channel gets that channel's first-layer weights at zero, so the
    start is the old model exactly). After every epoch the validation heart NRMSE (median over
    samples, and at R = 1 the median and worst per-sample ratio to the untrained model, i.e. the
    PSIRNet head on the classical images) is printed; ``best.pt`` (+ sidecar) is the best epoch
    by the median.

    Returns
    -------
    dict
        Metrics of the best epoch and the run.
    """
    import time
    from pathlib import Path

    from cmrecon.models.weights import load_checkpoint, save_checkpoint
    if threads > 0:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    dev = torch.device(device)
    protocol = dict(TRAIN_PROTOCOL if protocol is None else protocol)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def draw(s: int, n: int, what: str) -> list:
        return draw_samples(s, n, protocol, workers, say=lambda done: say(
            f"refine: {what} samples {done} ({time.perf_counter() - t0:.0f} s)"))

    train, val = draw(seed, n_train, "training"), draw(seed + 1, n_val, "validation")
    sizes = sorted({tuple(int(a) for a in s["ir"].shape[-2:]) for s in train})
    max_r = max(int(s["R"]) for s in train)
    model = PsirRefine(chans, pools, noise_channel=noise_channel, trained_sizes=sizes, max_acceleration=max_r)
    if init:
        start = load_checkpoint(init)
        if type(start.model).__name__ != "PsirRefine":
            raise ValueError(f"--init {init} holds a {type(start.model).__name__}, not a PsirRefine")
        model.load_state_dict(_first_layer_from(model, start.model.state_dict()), strict=True)
        say(f"refine: starting from {init} (sha256 {start.sha256[:12]}...)")
    model = model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    untrained = PsirRefine(chans, pools, noise_channel=noise_channel).to(dev)

    def heart_errors(m: PsirRefine) -> np.ndarray:
        m.eval()
        errs = []
        with torch.no_grad():
            for s in val:
                p = m(torch.from_numpy(s["ir"])[None].to(dev), torch.from_numpy(s["pd"])[None].to(dev))
                errs.append(_heart_nrmse(p[0, 0].float().cpu().numpy(), s["target"][0], s["heart"][0]))
        m.train()
        return np.array(errs)

    base_errs = heart_errors(untrained)
    base = float(np.median(base_errs))
    r1 = np.array([s["R"] == 1 for s in val])

    def summary(errs: np.ndarray) -> Dict[str, float]:
        ratio = errs / base_errs
        return {"val_heart_nrmse": float(np.median(errs)),
                "val_ratio_median": float(np.median(ratio)),
                "val_r1_ratio_median": float(np.median(ratio[r1])) if r1.any() else float("nan"),
                "val_r1_ratio_worst": float(ratio[r1].max()) if r1.any() else float("nan")}

    def keep(m: Dict[str, float], epoch: int) -> None:
        nonlocal model
        cpu_model = model.to("cpu")
        save_checkpoint(out / "best.pt", cpu_model, cpu_model.model_config(),
                        {**m, "val_heart_nrmse_untrained": base, "epoch": epoch,
                         "init": str(init or ""), "n_train": n_train, "seed": seed})
        model = cpu_model.to(dev)

    start_metrics = summary(heart_errors(model))
    best = {**start_metrics, "epoch": 0}
    keep(start_metrics, 0)   # the start (untrained, or --init) until an epoch beats it
    say(f"refine: untrained (classical images through the head) validation heart NRMSE {base:.4f}; "
        f"start {start_metrics['val_heart_nrmse']:.4f}")
    rng = np.random.default_rng(seed + 2)
    budget = minutes * 60.0
    epoch = 0
    while time.perf_counter() - t0 < budget:
        epoch += 1
        losses = []
        for idx in _batches(train, rng, batch):
            ir, pd, target, w = (t.to(dev) for t in _batch(train, idx))
            loss = weighted_l1(model(ir, pd), target, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if time.perf_counter() - t0 > budget:
                break
        m = summary(heart_errors(model))
        say(f"refine: epoch {epoch} loss {np.mean(losses):.4f} validation heart NRMSE "
            f"{m['val_heart_nrmse']:.4f} ({m['val_heart_nrmse'] / base:.3f} of untrained; per-sample "
            f"ratio median {m['val_ratio_median']:.3f}, at R 1 median {m['val_r1_ratio_median']:.3f} "
            f"worst {m['val_r1_ratio_worst']:.3f}) {time.perf_counter() - t0:.0f} s")
        if m["val_heart_nrmse"] < best["val_heart_nrmse"]:
            best = {**m, "epoch": epoch}
            keep(m, epoch)
    best.update(untrained=base, epochs=epoch, seconds=time.perf_counter() - t0, n_train=n_train)
    say(f"refine: best epoch {best['epoch']}: {best['val_heart_nrmse']:.4f} vs untrained {base:.4f}")
    return best
