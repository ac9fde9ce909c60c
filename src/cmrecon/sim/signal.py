"""Signal of interleaved IR / PD single-shot bSSFP LGE: tissue parameters and Bloch simulation.

The sequence (docs/physics.md §1-2) repeats every two heartbeats (2·RR):

* beat 1 (IR, ISMRMRD ``set`` 0): non-selective inversion (efficiency η) at t = 0; a bSSFP
  shot of ``n_lines`` readouts with flip ``alpha_ir`` whose k-space-centre line is read at
  t = TI;
* beat 2 (PD, ``set`` 1): the same shot with flip ``alpha_pd`` at the same cardiac phase,
  centre line at t = RR + TI, no inversion;
* after each shot the transverse magnetisation is spoiled; free T1 recovery until the next event.

Each shot is simulated with hard pulses on one on-resonance isochromat per tissue: an α/2
preparation pulse TR/2 before the first readout, then alternating ±α pulses every TR with
T1/T2 relaxation between them, the echo read at TE = TR/2 (demodulated by the RF sign), and
a final spoiler. Every operation is affine in (Mx, My, Mz), so a whole 2·RR cycle is one 4×4
homogeneous matrix per tissue whose fixed point is the exact periodic steady state — no
iteration over cycles is needed. The per-readout signal of the steady-state cycle is returned,
in units of M0 (one per unit proton density), positive for +z magnetisation at the shot start.

Phase-encode ordering is **linear** (lines read in ascending ``kspace_encode_step_1``), so the
approach to steady state along the shot is a smooth modulation along PE; TI is measured from
the inversion to the readout of the k-space centre line (index ``n_pe // 2``).

References
----------
Kellman P, Arai AE, McVeigh ER, Aletras AH. Phase-sensitive inversion recovery for detecting
myocardial infarction using gadolinium-delayed hyperenhancement. MRM 2002;47:372-383.
Schmitt P, Griswold MA, Jakob PM, et al. Inversion recovery TrueFISP: quantification of T1, T2,
and spin density. MRM 2004;51:661-667.
Scheffler K, Hennig J. Is TrueFISP a gradient-echo or a spin-echo sequence? MRM 2003;49:395-397.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TISSUES", "TissueParams", "SequenceTiming", "sample_tissue_params",
           "hard_pulse_shot_signals", "analytic_shot_signals", "analytic_null_ti_ms",
           "null_ti_ms", "TISSUE_RANGES_15T"]

#: Signal classes (tissues with their own relaxation times). Order is the class index.
TISSUES: tuple[str, ...] = ("myocardium", "scar", "blood", "fat", "liver", "muscle", "lung",
                            "soft_tissue")

#: Post-contrast (10-20 min after gadolinium) relaxation at 1.5 T: (T1 range ms, T2 range ms,
#: relative PD range). Heart tissues and blood from docs/physics.md §2; the others are plausible
#: post-contrast values (liver takes up Gd: T1 ~ 300-400 ms; skeletal muscle ~ 500-650 ms;
#: lung parenchyma low PD, short T2*; subcutaneous tissue treated as a fat/muscle mix).
TISSUE_RANGES_15T: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "myocardium": ((400.0, 500.0), (42.0, 48.0), (0.78, 0.82)),
    "scar": ((250.0, 300.0), (50.0, 60.0), (0.78, 0.82)),
    "blood": ((250.0, 350.0), (200.0, 250.0), (0.97, 1.0)),
    "fat": ((240.0, 280.0), (70.0, 90.0), (0.85, 0.95)),
    "liver": ((300.0, 400.0), (35.0, 45.0), (0.65, 0.75)),
    "muscle": ((500.0, 650.0), (30.0, 40.0), (0.7, 0.8)),
    "lung": ((600.0, 900.0), (20.0, 40.0), (0.08, 0.15)),
    "soft_tissue": ((350.0, 500.0), (50.0, 70.0), (0.7, 0.85)),
}


@dataclass(frozen=True)
class TissueParams:
    """Relaxation and proton density of each signal class of one subject.

    Attributes
    ----------
    t1_ms, t2_ms, pd : (n_tissues,) float64
        T1, T2 in ms and relative proton density, in the order of :data:`TISSUES`.
    """

    t1_ms: np.ndarray
    t2_ms: np.ndarray
    pd: np.ndarray


@dataclass(frozen=True)
class SequenceTiming:
    """Timing of the interleaved IR/PD bSSFP sequence.

    Attributes
    ----------
    rr_ms : R-R interval, ms (the cycle is 2·RR).
    ti_ms : inversion to k-space-centre readout, ms.
    tr_ms : bSSFP repetition time, ms (TE = TR/2).
    n_lines : readouts per shot.
    centre_index : position (0-based) of the k-space-centre readout in the shot.
    alpha_ir_deg, alpha_pd_deg : flip angles of the IR and PD shots, degrees.
    inversion_efficiency : η, Mz → -η·Mz at the inversion pulse.
    """

    rr_ms: float = 1000.0
    ti_ms: float = 300.0
    tr_ms: float = 2.8
    n_lines: int = 80
    centre_index: int = 40
    alpha_ir_deg: float = 45.0
    alpha_pd_deg: float = 8.0
    inversion_efficiency: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.centre_index < self.n_lines:
            raise ValueError(f"centre_index {self.centre_index} outside the shot of {self.n_lines} lines")
        start = self.ti_ms - (self.centre_index + 1.0) * self.tr_ms
        end = self.ti_ms + (self.n_lines - self.centre_index) * self.tr_ms
        if start <= 0:
            raise ValueError(f"ti_ms {self.ti_ms} too short: the shot would start before the inversion")
        if end >= self.rr_ms:
            raise ValueError(f"the IR shot ends at {end:.1f} ms after the inversion, beyond rr_ms {self.rr_ms}")


def sample_tissue_params(rng: np.random.Generator, field_t: float = 1.5) -> TissueParams:
    """Draw one subject's tissue parameters (contrast dose and delay vary between subjects).

    T1s of all tissues are drawn with a shared "dose" quantile plus a small independent part,
    so a subject with short myocardial T1 also tends to have short blood T1. At 3 T every T1 is
    longer by a factor drawn from U(1.10, 1.20) (docs/physics.md §2); T2 is kept.

    Parameters
    ----------
    rng : numpy Generator.
    field_t : 1.5 or 3.0 (tesla).

    Returns
    -------
    TissueParams in the order of :data:`TISSUES`.
    """
    if field_t not in (1.5, 3.0):
        raise ValueError(f"field_t must be 1.5 or 3.0, got {field_t}")
    shared = rng.uniform()
    t1, t2, pd = [], [], []
    for name in TISSUES:
        (t1lo, t1hi), (t2lo, t2hi), (pdlo, pdhi) = TISSUE_RANGES_15T[name]
        q = np.clip(0.7 * shared + 0.3 * rng.uniform(), 0.0, 1.0)
        t1.append(t1lo + q * (t1hi - t1lo))
        t2.append(rng.uniform(t2lo, t2hi))
        pd.append(rng.uniform(pdlo, pdhi))
    t1 = np.array(t1)
    if field_t == 3.0:
        t1 = t1 * rng.uniform(1.10, 1.20)
    return TissueParams(t1_ms=t1, t2_ms=np.array(t2), pd=np.array(pd))


# ---------------------------------------------------------------- hard-pulse simulation
def _rot_x(alpha: float) -> np.ndarray:
    """4×4 homogeneous rotation about x by ``alpha`` rad (acts on (Mx, My, Mz, 1))."""
    c, s = np.cos(alpha), np.sin(alpha)
    m = np.eye(4)
    m[1, 1], m[1, 2], m[2, 1], m[2, 2] = c, s, -s, c
    return m


def _relax(t_ms: float, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """(T, 4, 4) homogeneous free relaxation over ``t_ms`` for tissues with ``t1``, ``t2`` (ms)."""
    e1, e2 = np.exp(-t_ms / t1), np.exp(-t_ms / t2)
    m = np.zeros((t1.size, 4, 4))
    m[:, 0, 0] = e2
    m[:, 1, 1] = e2
    m[:, 2, 2] = e1
    m[:, 2, 3] = 1.0 - e1
    m[:, 3, 3] = 1.0
    return m


def _shot(m: np.ndarray, alpha: float, tr: float, n: int, t1: np.ndarray, t2: np.ndarray,
          record: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply a bSSFP shot (α/2 prep, n × ±α, spoil) to a (T, 4, 4) affine map or (T, 4) state.

    The shot spans (n + 0.5)·TR: the α/2 prep, TR/2, then n times [±α, TR/2, echo, TR/2],
    then the spoiler. ``sig`` (T, n) holds the demodulated echoes when ``record``.
    """
    half = _relax(tr / 2.0, t1, t2)
    prep = _rot_x(-alpha / 2.0)
    sig = np.empty((t1.size, n)) if record else None
    m = prep @ m
    m = half @ m
    for k in range(n):
        sign = 1.0 if k % 2 == 0 else -1.0
        m = _rot_x(sign * alpha) @ m
        m = half @ m
        if record:
            # echo: transverse My, demodulated by the RF sign; prep rotates +z towards +y
            sig[:, k] = sign * m[:, 1, 0]  # m is a (T, 4, 1) state when recording
        m = half @ m
    spoil = np.diag([0.0, 0.0, 1.0, 1.0])
    m = spoil @ m
    return m, sig


def hard_pulse_shot_signals(t1_ms: np.ndarray, t2_ms: np.ndarray, timing: SequenceTiming,
                            n_lines_pd: int | None = None, centre_index_pd: int | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Per-readout bSSFP signal of the IR and the PD shot in the periodic IR/PD steady state.

    Parameters
    ----------
    t1_ms, t2_ms : (T,) float
        Relaxation times of T tissues, ms.
    timing : SequenceTiming
        RR, TI, TR, shot length and flip angles; TI is inversion → centre readout.
    n_lines_pd, centre_index_pd : int, optional
        Shot length and centre position of the PD shot when it differs from the IR shot
        (default: the same).

    Returns
    -------
    s_ir : (T, n_lines) float64
        Echo signal of each IR readout in units of M0 (signed: negative while Mz < 0).
    s_pd : (T, n_lines_pd) float64
        Echo signal of each PD readout in units of M0.

    References
    ----------
    Schmitt et al., MRM 2004;51:661 (IR TrueFISP); Kellman et al., MRM 2002;47:372.
    """
    t1 = np.atleast_1d(np.asarray(t1_ms, float))
    t2 = np.atleast_1d(np.asarray(t2_ms, float))
    tr, rr = timing.tr_ms, timing.rr_ms
    n_ir, c_ir = timing.n_lines, timing.centre_index
    n_pd = n_ir if n_lines_pd is None else int(n_lines_pd)
    c_pd = c_ir if centre_index_pd is None else int(centre_index_pd)
    a_ir, a_pd = np.deg2rad(timing.alpha_ir_deg), np.deg2rad(timing.alpha_pd_deg)
    # times (from the inversion) where each shot starts (α/2 pulse) and ends (spoiler)
    ir_start = timing.ti_ms - (c_ir + 1.0) * tr   # prep TR/2 + c readouts·TR + TR/2 to the echo
    ir_end = ir_start + (n_ir + 0.5) * tr
    pd_start = rr + timing.ti_ms - (c_pd + 1.0) * tr
    pd_end = pd_start + (n_pd + 0.5) * tr
    if ir_start <= 0 or pd_end >= 2 * rr or ir_end >= pd_start:
        raise ValueError("shots do not fit in the 2·RR cycle for this RR/TI/TR/shot length")
    inv = np.diag([0.0, 0.0, -timing.inversion_efficiency, 1.0])  # crusher spoils Mxy too
    inv_t = np.broadcast_to(inv, (t1.size, 4, 4))

    def cycle(state: np.ndarray, record: bool):
        s = _apply(_relax(ir_start, t1, t2), _apply(inv_t, state))
        s, sig_ir = _shot(s, a_ir, tr, n_ir, t1, t2, record)
        s = _apply(_relax(pd_start - ir_end, t1, t2), s)
        s, sig_pd = _shot(s, a_pd, tr, n_pd, t1, t2, record)
        s = _apply(_relax(2 * rr - pd_end, t1, t2), s)
        return s, sig_ir, sig_pd

    eye = np.broadcast_to(np.eye(4), (t1.size, 4, 4)).copy()
    full, _, _ = cycle(eye, record=False)
    # fixed point of the affine cycle map M -> A M + b, just before the inversion
    a, b = full[:, :3, :3], full[:, :3, 3]
    m_ss = np.linalg.solve(np.eye(3)[None] - a, b[..., None])[..., 0]
    state = np.concatenate([m_ss, np.ones((t1.size, 1))], axis=1)[..., None]
    _, sig_ir, sig_pd = cycle(state, record=True)
    return sig_ir, sig_pd


def _apply(m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Apply (T, 4, 4) matrices to (T, 4, 4) maps or (T, 4, 1) homogeneous states."""
    return m @ s


# ---------------------------------------------------------------- analytic cross-check
def analytic_null_ti_ms(t1_ms: float, rr_ms: float = 1000.0, eta: float = 1.0) -> float:
    """Null TI of the idealised two-beat recovery: TI₀ = T1·ln(1 + η·m), m = (1−E)/(1+ηE), E = exp(−2RR/T1).

    Instant readouts, no saturation by the shots (docs/physics.md §2; Kellman 2002).
    """
    e = np.exp(-2.0 * rr_ms / t1_ms)
    m = (1.0 - e) / (1.0 + eta * e)
    return float(t1_ms * np.log(1.0 + eta * m))


def analytic_shot_signals(t1_ms: np.ndarray, t2_ms: np.ndarray, timing: SequenceTiming
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Approximate per-readout signals: idealised two-beat Mz plus Schmitt's bSSFP approach.

    Mz before each shot from the idealised instant-readout recovery (docs/physics.md §2):
    IR: Mz0 = 1 − (1 + η·m)·exp(−t_start/T1); PD: Mz0 = 1 − (1 − Mz_after_IR) e^{…} with the IR
    shot treated as a saturation-free instant readout, i.e. Mz0_PD = 1 − (1+ηm)e^{-(RR+t)/T1}.
    Along the shot: S(t) = S_st + (Mz0·sin(α/2) − S_st)·exp(−t/T1*),
    1/T1* = cos²(α/2)/T1 + sin²(α/2)/T2, S_st = sin α / ((T1/T2 + 1) − cos α·(T1/T2 − 1)).
    Neglects the shot's own saturation of the recovery (small for the 8° PD shot, not for IR).

    Returns
    -------
    s_ir, s_pd : (T, n_lines) float64, units of M0.

    References
    ----------
    Schmitt et al., MRM 2004;51:661.
    """
    t1 = np.atleast_1d(np.asarray(t1_ms, float))[:, None]
    t2 = np.atleast_1d(np.asarray(t2_ms, float))[:, None]
    tr, rr, eta = timing.tr_ms, timing.rr_ms, timing.inversion_efficiency
    c, n = timing.centre_index, timing.n_lines
    t_start = timing.ti_ms - (c + 1.0) * tr
    e = np.exp(-2.0 * rr / t1)
    m = (1.0 - e) / (1.0 + eta * e)
    mz_ir = 1.0 - (1.0 + eta * m) * np.exp(-t_start / t1)
    mz_pd = 1.0 - (1.0 + eta * m) * np.exp(-(rr + t_start) / t1)
    t = (np.arange(n)[None, :] + 1.0) * tr  # prep → echo k (TR/2 + k·TR + TR/2)

    def along(mz0: np.ndarray, alpha_deg: float) -> np.ndarray:
        a = np.deg2rad(alpha_deg)
        r = t1 / t2
        s_st = np.sin(a) / ((r + 1.0) - np.cos(a) * (r - 1.0))
        inv_t1s = np.cos(a / 2) ** 2 / t1 + np.sin(a / 2) ** 2 / t2
        return s_st + (mz0 * np.sin(a / 2) - s_st) * np.exp(-t * inv_t1s)

    return along(mz_ir, timing.alpha_ir_deg), along(mz_pd, timing.alpha_pd_deg)


def null_ti_ms(t1_ms: float, t2_ms: float, timing: SequenceTiming, lo: float = 100.0,
               hi: float | None = None) -> float:
    """TI (ms) at which the hard-pulse IR centre-line signal of one tissue crosses zero.

    Bisection on TI of :func:`hard_pulse_shot_signals` (the other timing fields kept).
    """
    from dataclasses import replace
    if hi is None:
        hi = timing.rr_ms - (timing.n_lines - timing.centre_index + 2) * timing.tr_ms
    lo = max(lo, (timing.centre_index + 2) * timing.tr_ms)

    def f(ti: float) -> float:
        s, _ = hard_pulse_shot_signals([t1_ms], [t2_ms], replace(timing, ti_ms=ti))
        return float(s[0, timing.centre_index])

    flo, fhi = f(lo), f(hi)
    if flo * fhi > 0:
        raise ValueError(f"no IR null between TI {lo} and {hi} ms for T1 {t1_ms} ms")
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        fm = f(mid)
        if fm * flo <= 0:
            hi = mid
        else:
            lo, flo = mid, fm
        if hi - lo < 0.01:
            break
    return 0.5 * (lo + hi)
