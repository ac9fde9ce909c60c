"""Signal of pre-contrast bSSFP cine: native tissue T1/T2 at 1.5 T and 3 T, steady-state signal.

A cine acquisition plays bSSFP continuously through the heartbeat (the sequence keeps running
during the short trigger gap), so every tissue sits in its on-resonance steady state
(Scheffler & Hennig 2003, eq. at TE = TR/2):

    S = PD · sin α · (1 − E1) · √E2 / (1 − (E1 − E2)·cos α − E1·E2),   E1,2 = exp(−TR / T1,2)

which for TR ≪ T1, T2 is ``PD · sin α / ((T1/T2 + 1) − cos α·(T1/T2 − 1))`` (Schmitt 2004): the
contrast is T2/T1, so blood (T2/T1 ≈ 0.15) and fat are bright and myocardium (≈ 0.05) dark.
The tissue classes are those of :data:`cmrecon.sim.signal.TISSUES` (the phantom's labels map
onto them); relative proton densities are the LGE simulator's (:data:`TISSUE_RANGES_15T`).

Native relaxation times, ranges drawn uniformly per subject (T1 ms, T2 ms):

============= ================ ============ ================ ============ ==========================
class         T1 1.5 T         T2 1.5 T     T1 3 T           T2 3 T       source
============= ================ ============ ================ ============ ==========================
myocardium    950–1050         48–56        1120–1220        42–48        Messroghli 2007; von
                                                                          Knobelsdorff-Brenkenhoff
                                                                          2013; Giri 2009
scar          1100–1250        55–65        1300–1450        48–58        chronic infarct: native
                                                                          T1/T2 a little longer
blood         1450–1650        220–290      1800–2000        180–275      Stanisz 2005
fat           300–380          54–62        365–400          64–72        de Bazelaire 2004
liver         550–630          40–52        740–880          30–38        de Bazelaire 2004
muscle        850–1050         27–44        900–1420         29–50        de Bazelaire 2004;
                                                                          Stanisz 2005
lung          1150–1350        20–40        1250–1450        20–40        Stadler 2005 (T1); T2
                                                                          stands in for the short T2*
soft tissue   700–900          50–70        850–1050         45–65        plausible mediastinal mix
============= ================ ============ ================ ============ ==========================

References
----------
Scheffler K, Hennig J. Is TrueFISP a gradient-echo or a spin-echo sequence? MRM 2003;49:395-397.
Schmitt P, Griswold MA, Jakob PM, et al. Inversion recovery TrueFISP: quantification of T1, T2,
and spin density. MRM 2004;51:661-667.
Messroghli DR, Plein S, Higgins DM, et al. Human myocardium: single-breath-hold MR T1 mapping
with high spatial resolution — reproducibility study. Radiology 2006;238:1004-1012.
Messroghli DR, Greiser A, Fröhlich M, et al. Optimization and validation of a fully-integrated
pulse sequence for modified Look-Locker inversion-recovery (MOLLI) T1 mapping of the heart.
JMRI 2007;26:1081-1086.
von Knobelsdorff-Brenkenhoff F, Prothmann M, Dieringer MA, et al. Myocardial T1 and T2 mapping
at 3 T: reference values, influencing factors and implications. JCMR 2013;15:53.
Giri S, Chung Y-C, Merchant A, et al. T2 quantification for improved detection of myocardial
edema. JCMR 2009;11:56.
Stanisz GJ, Odrobina EE, Pun J, et al. T1, T2 relaxation and magnetization transfer in tissue
at 3T. MRM 2005;54:507-512.
de Bazelaire CMJ, Duhamel GD, Rofsky NM, Alsop DC. MR imaging relaxation times of abdominal and
pelvic tissues measured in vivo at 3.0 T: preliminary results. Radiology 2004;230:652-659.
Stadler A, Jakob PM, Griswold M, Barth M, Bankier AA. T1 mapping of the entire lung parenchyma:
influence of the respiratory phase in healthy individuals. JMRI 2005;21:759-764.
"""

from __future__ import annotations

import numpy as np

from cmrecon.sim.signal import TISSUE_RANGES_15T, TISSUES, TissueParams

__all__ = ["NATIVE_RANGES", "bssfp_steady_state", "sample_native_tissues"]

#: Native (pre-contrast) (T1 range ms, T2 range ms) per field strength and tissue class.
NATIVE_RANGES: dict[float, dict[str, tuple[tuple[float, float], tuple[float, float]]]] = {
    1.5: {
        "myocardium": ((950.0, 1050.0), (48.0, 56.0)),
        "scar": ((1100.0, 1250.0), (55.0, 65.0)),
        "blood": ((1450.0, 1650.0), (220.0, 290.0)),
        "fat": ((300.0, 380.0), (54.0, 62.0)),
        "liver": ((550.0, 630.0), (40.0, 52.0)),
        "muscle": ((850.0, 1050.0), (27.0, 44.0)),
        "lung": ((1150.0, 1350.0), (20.0, 40.0)),
        "soft_tissue": ((700.0, 900.0), (50.0, 70.0)),
    },
    3.0: {
        "myocardium": ((1120.0, 1220.0), (42.0, 48.0)),
        "scar": ((1300.0, 1450.0), (48.0, 58.0)),
        "blood": ((1800.0, 2000.0), (180.0, 275.0)),
        "fat": ((365.0, 400.0), (64.0, 72.0)),
        "liver": ((740.0, 880.0), (30.0, 38.0)),
        "muscle": ((900.0, 1420.0), (29.0, 50.0)),
        "lung": ((1250.0, 1450.0), (20.0, 40.0)),
        "soft_tissue": ((850.0, 1050.0), (45.0, 65.0)),
    },
}


def sample_native_tissues(rng: np.random.Generator, field_t: float = 1.5) -> TissueParams:
    """Draw one subject's native T1, T2 and relative proton density per tissue class.

    Parameters
    ----------
    rng : numpy Generator.
    field_t : 1.5 or 3.0 (tesla).

    Returns
    -------
    TissueParams in the order of :data:`cmrecon.sim.signal.TISSUES` (T1/T2 in ms, PD relative
    to blood ≈ 1); each value uniform in its :data:`NATIVE_RANGES` / PD range.

    Raises
    ------
    ValueError
        ``field_t`` is not 1.5 or 3.0.
    """
    if field_t not in NATIVE_RANGES:
        raise ValueError(f"field_t must be 1.5 or 3.0, got {field_t}")
    t1, t2, pd = [], [], []
    for name in TISSUES:
        (t1lo, t1hi), (t2lo, t2hi) = NATIVE_RANGES[field_t][name]
        pdlo, pdhi = TISSUE_RANGES_15T[name][2]
        t1.append(rng.uniform(t1lo, t1hi))
        t2.append(rng.uniform(t2lo, t2hi))
        pd.append(rng.uniform(pdlo, pdhi))
    return TissueParams(t1_ms=np.array(t1), t2_ms=np.array(t2), pd=np.array(pd))


def bssfp_steady_state(t1_ms, t2_ms, tr_ms: float, flip_deg: float, pd=1.0) -> np.ndarray:
    """On-resonance bSSFP steady-state echo amplitude at TE = TR/2 (alternating ±α).

    Parameters
    ----------
    t1_ms, t2_ms : (...) float, relaxation times, ms.
    tr_ms : repetition time, ms.
    flip_deg : flip angle α, degrees.
    pd : (...) float, proton density (the signal is in its units: M0 = pd).

    Returns
    -------
    (...) float64, ``pd·sin α (1 − E1) √E2 / (1 − (E1 − E2) cos α − E1 E2)``.

    References
    ----------
    Scheffler & Hennig, MRM 2003;49:395; Schmitt et al., MRM 2004;51:661.
    """
    t1 = np.asarray(t1_ms, np.float64)
    t2 = np.asarray(t2_ms, np.float64)
    a = np.deg2rad(flip_deg)
    e1, e2 = np.exp(-tr_ms / t1), np.exp(-tr_ms / t2)
    num = np.sin(a) * (1.0 - e1) * np.sqrt(e2)
    return np.asarray(pd, np.float64) * num / (1.0 - (e1 - e2) * np.cos(a) - e1 * e2)
