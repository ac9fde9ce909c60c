"""In-memory PSIRNet-style training samples from the LGE simulator (no files, no headers).

Each sample is one IR/PD pair of one slice, already in the form the learned model takes
(docs/physics.md §5): prewhitened multi-coil k-space with the readout oversampling removed, zero
where not sampled, the sampling mask, coil maps and the surface-coil-corrected PSIR targets.

Differences from :func:`cmrecon.sim.lge.simulate_lge`, chosen for speed: data are generated
directly in the prewhitened coil basis (sensitivities ``W·C`` for a random Ψ, white unit noise);
no readout oversampling; no respiratory motion in the input (the input is the repeat the MOCO
reference was registered to); the band-limited object drawn on a 4× (not 6×) finer grid; sensitivities from a coarse
Biot–Savart grid (every 4th pixel, cubic interpolation). The signal model (hard-pulse bSSFP
per tissue, per-line modulation along PE, linear order) is the same.

Targets
-------
``target_clean`` — the PSIRNet head on the noise-free IR and PD (fully sampled, true maps),
scaled by √K as a K-repeat MOCO average would be (so the head's regulariser acts as it does
on the MOCO target).
``target_moco_noisy`` — the head on an idealised MOCO average of K repeats: perfect
registration, every repeat kept; ``x̄ = (1/√K)·Σ_k (x_clean + e_k)`` where ``e_0`` is the
coil-combined image of the input repeat's own full k-space noise (the sampled lines of which
are in ``ir_kspace``/``pd_kspace``) and ``e_1..e_{K−1}`` are independent unit complex noise
images. This is the published PSIRNet yardstick (docs/physics.md §6) — it shares noise with the input.

References
----------
PSIRNet, arXiv 2604.08781; Kellman P et al. MRM 2002;47:372 and MRM 2005;53:194.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from cmrecon.recon.fft import fft1c, ifft1c, ifft2c
from cmrecon.recon.noise import prewhitening_matrix
from cmrecon.recon.sense import reduce
from cmrecon.sim import coils as coil_mod
from cmrecon.sim import phantom as ph
from cmrecon.sim.kspace import class_fractions
from cmrecon.sim.sampling import line_signals, sampling_pattern
from cmrecon.sim.signal import SequenceTiming, hard_pulse_shot_signals, sample_tissue_params

__all__ = ["make_sample", "iterate_samples", "estimate_maps_from_acs"]


def _pick(rng: np.random.Generator, choice):
    """A scalar from a tuple of choices, or uniform in a (lo, hi) float range."""
    if isinstance(choice, (int, float)):
        return choice
    return choice[int(rng.integers(len(choice)))]


def estimate_maps_from_acs(kspace: np.ndarray, acs: np.ndarray) -> np.ndarray:
    """Coil maps from the calibration lines: Hann-windowed low-resolution coil images / RSS.

    Parameters
    ----------
    kspace : (coils, RO, PE) complex64, prewhitened.
    acs : (PE,) bool, the calibration lines (contiguous about the centre).

    Returns
    -------
    (coils, RO, PE) complex64 maps with RSS = 1 (where the low-resolution image is not zero).
    """
    n_ro, n_pe = kspace.shape[1:]
    lines = np.flatnonzero(acs)
    win = np.zeros(n_pe)
    win[lines] = np.hanning(lines.size + 2)[1:-1]
    win_ro = np.hanning(n_ro + 2)[1:-1]
    low = ifft2c((kspace * win_ro[None, :, None] * win[None, None, :]).astype(np.complex64))
    rss = np.sqrt(np.sum(np.abs(low) ** 2, axis=0))
    return (low / np.maximum(rss, 1e-6 * rss.max())).astype(np.complex64)


def make_sample(rng: np.random.Generator, size: tuple[int, int] = (128, 128),
                coils: tuple[int, int] = (8, 16), R: Sequence[int] = (1, 2, 3),
                acs_lines: int = 24, partial_fourier: Sequence[float] = (1.0,),
                snr: tuple[float, float] = (10.0, 40.0), moco_repeats: tuple[int, int] = (4, 8),
                field_t: Sequence[float] = (1.5, 3.0), ti_ms: tuple[float, float] = (260.0, 340.0),
                heart_rate_bpm: tuple[float, float] = (50.0, 90.0),
                fov_ro_mm: tuple[float, float] = (320.0, 400.0), tr_ms: float = 2.8,
                flip_deg: tuple[float, float] = (45.0, 8.0), sens: str = "true",
                as_torch: bool = False) -> dict:
    """One simulated PSIRNet training sample.

    Parameters
    ----------
    rng : numpy Generator (the only source of randomness; same state → same sample).
    size : (RO, PE) matrix (readout oversampling already removed).
    coils : (lo, hi) inclusive range of the number of coils.
    R : acceleration factors to draw from (every R-th line through ``PE // 2``).
    acs_lines : embedded calibration lines about the centre (for R > 1).
    partial_fourier : PE partial-Fourier fractions to draw from (1, 7/8, 6/8).
    snr : (lo, hi) PD blood SNR of one fully sampled repeat (uniform).
    moco_repeats : (lo, hi) inclusive range of K, the repeats in the MOCO average.
    field_t : field strengths to draw from, T.
    ti_ms, heart_rate_bpm, fov_ro_mm : (lo, hi) uniform ranges; pixels are square.
    tr_ms : bSSFP TR, ms.
    flip_deg : (IR, PD) flip angles, degrees.
    sens : "true" (true prewhitened maps, RSS = 1) or "acs" (estimated from the sample's PD
        calibration lines by :func:`estimate_maps_from_acs`).
    as_torch : return torch tensors instead of numpy arrays.

    Returns
    -------
    dict with
        ``ir_kspace``, ``pd_kspace`` : (coils, RO, PE) complex64, prewhitened, zero where unsampled;
        ``mask`` : (1, RO, PE) bool;
        ``sens_maps`` : (coils, RO, PE) complex64;
        ``target_clean``, ``target_moco_noisy`` : (1, RO, PE) float32 PSIR (dimensionless);
        ``heart_mask``, ``body_mask`` : (1, RO, PE) bool;
        ``ir_clean``, ``pd_clean`` : (RO, PE) complex64 noise-free single-repeat images, SNR units;
        ``labels`` : (RO, PE) uint8;
        ``acceleration``, ``moco_repeats`` : int; ``snr`` : float.
    """
    from cmrecon.recon.psir_head import psirnet_head

    if sens not in ("true", "acs"):
        raise ValueError(f"sens must be 'true' or 'acs', got {sens!r}")
    n_ro, n_pe = size
    n_coils = int(rng.integers(coils[0], coils[1] + 1))
    acc = int(_pick(rng, tuple(R)))
    pf = float(_pick(rng, tuple(partial_fourier)))
    field = float(_pick(rng, tuple(field_t)))
    fov_ro = rng.uniform(*fov_ro_mm)
    fov = (fov_ro, fov_ro * n_pe / n_ro)
    pixel_mm = (fov[0] / n_ro, fov[1] / n_pe)
    k_moco = int(rng.integers(moco_repeats[0], moco_repeats[1] + 1))
    snr_val = rng.uniform(*snr)

    smp = sampling_pattern(n_pe, acc, acs_lines, "embedded", pf)
    ci = int(np.searchsorted(smp.shot, smp.centre))
    tissues = sample_tissue_params(rng, field)
    ti = rng.uniform(*ti_ms)
    hr = rng.uniform(*heart_rate_bpm)
    while True:  # slow the heart until the shot fits in the diastolic window
        try:
            timing = SequenceTiming(rr_ms=60000.0 / hr, ti_ms=ti, tr_ms=tr_ms, n_lines=len(smp.shot),
                                    centre_index=ci, alpha_ir_deg=flip_deg[0], alpha_pd_deg=flip_deg[1])
            s_ir, s_pd = hard_pulse_shot_signals(tissues.t1_ms, tissues.t2_ms, timing)
            break
        except ValueError:
            if hr < 31.0:
                raise
            hr *= 0.9
    w_ir = line_signals(s_ir, smp.shot, n_pe).astype(np.complex64)
    w_pd = line_signals(s_pd, smp.shot, n_pe).astype(np.complex64)

    an = ph.random_anatomy(rng, fov, rng.uniform(0.1, 0.9))
    labels, box = ph.rasterize(an, size, fov, supersample=2)
    # the object as a scanner sees it (band-limited to the matrix), as cmrecon.sim.lge draws it
    lfrac = ph.bandlimited_fractions(an, size, fov, supersample=4)
    body = ph.body_mask(labels)
    array = coil_mod.random_coil_array(rng, n_coils, (an.body.a, an.body.b), an.rotation_deg)
    sens_raw = coil_mod.extend_outside(coil_mod.normalise_sensitivities(
        coil_mod.coil_maps_on_grid(array, size, fov, step=4), body), body)
    psi = coil_mod.random_noise_covariance(rng, array.centres)
    whiten = prewhitening_matrix(psi)
    x, y = ph.pixel_coordinates(size, fov)
    phi = coil_mod.background_phase(rng, x, y, max(fov))
    sens_w = (whiten @ sens_raw.reshape(n_coils, -1)).reshape(sens_raw.shape)
    rss = np.sqrt(np.sum(np.abs(sens_w) ** 2, axis=0))
    maps = (sens_w / np.maximum(rss, 1e-12)).astype(np.complex64)

    # hybrid (x, ky) space per tissue and coil: 1D FFT along PE, weight each ky, sum tissues
    obj = class_fractions(lfrac) * tissues.pd[:, None, None].astype(np.float32)
    keep = np.flatnonzero(obj.reshape(obj.shape[0], -1).any(axis=1))
    cw = (sens_w * np.exp(1j * phi)).astype(np.complex64)                 # (C, RO, PE)
    hyb = fft1c((obj[keep, None] * cw[None]).astype(np.complex64), axis=-1)  # (T', C, RO, PE)
    h_ir = np.einsum("tp,tcrp->crp", w_ir[keep], hyb)
    h_pd = np.einsum("tp,tcrp->crp", w_pd[keep], hyb)
    k_ir = fft1c(h_ir, axis=-2)
    k_pd = fft1c(h_pd, axis=-2)
    img_ir = reduce(ifft1c(h_ir, axis=-1), maps)[0]
    img_pd = reduce(ifft1c(h_pd, axis=-1), maps)[0]
    pure = box[ph.LV_BLOOD] > 0.999     # whole pixels of blood (box fractions), as sim.lge
    if not pure.any():
        pure = labels == ph.LV_BLOOD
    scale = np.float32(snr_val / np.mean(np.abs(img_pd[pure])))
    ir_clean = (img_ir * scale).astype(np.complex64)
    pd_clean = (img_pd * scale).astype(np.complex64)

    def cnoise(shape: tuple[int, ...]) -> np.ndarray:
        return ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)).astype(np.complex64)

    line_mask = np.zeros(n_pe, bool)
    line_mask[list(smp.shot)] = True
    mask = np.broadcast_to(line_mask[None, None, :], (1, n_ro, n_pe)).copy()
    n_ir, n_pd = cnoise(k_ir.shape), cnoise(k_pd.shape)
    ir_k = np.where(mask, k_ir * scale + n_ir, 0).astype(np.complex64)
    pd_k = np.where(mask, k_pd * scale + n_pd, 0).astype(np.complex64)

    root_k = np.float32(np.sqrt(k_moco))
    e_ir = reduce(ifft2c(n_ir), maps)[0] + cnoise((k_moco - 1, n_ro, n_pe)).sum(0)
    e_pd = reduce(ifft2c(n_pd), maps)[0] + cnoise((k_moco - 1, n_ro, n_pe)).sum(0)
    moco_ir = root_k * ir_clean + e_ir / root_k
    moco_pd = root_k * pd_clean + e_pd / root_k
    target_clean = psirnet_head(root_k * ir_clean, root_k * pd_clean)
    target_moco = psirnet_head(moco_ir.astype(np.complex64), moco_pd.astype(np.complex64))

    if sens == "acs":
        acs = np.zeros(n_pe, bool)
        acs[list(smp.acs) if smp.acs else list(range(n_pe // 2 - acs_lines // 2, n_pe // 2 + acs_lines // 2))] = True
        sens_maps = estimate_maps_from_acs(pd_k, acs & line_mask)
    else:
        sens_maps = maps

    out = {
        "ir_kspace": ir_k, "pd_kspace": pd_k, "mask": mask, "sens_maps": sens_maps,
        "target_clean": target_clean[None].astype(np.float32),
        "target_moco_noisy": target_moco[None].astype(np.float32),
        "heart_mask": ph.heart_mask(labels, pixel_mm)[None], "body_mask": body[None],
        "ir_clean": ir_clean, "pd_clean": pd_clean, "labels": labels,
        "acceleration": acc, "moco_repeats": k_moco, "snr": float(snr_val),
    }
    if as_torch:
        import torch
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
               for k, v in out.items()}
    return out


def iterate_samples(seed: int, n: int | None = None, **kwargs) -> Iterator[dict]:
    """Yield ``n`` samples (forever when None) from ``np.random.default_rng(seed)``.

    Sample i depends only on ``(seed, i)`` (each has its own child generator), so a data
    loader worker can regenerate any sample. ``kwargs`` go to :func:`make_sample`.
    """
    ss = np.random.SeedSequence(seed)
    i = 0
    while n is None or i < n:
        (child,) = ss.spawn(1)
        yield make_sample(np.random.default_rng(child), **kwargs)
        i += 1
