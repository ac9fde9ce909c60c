"""Respiratory motion of the heart between heartbeats, and the key repeat it defines."""

from __future__ import annotations

import numpy as np

#: Respiratory motion models (:func:`breathing_motion`).
BREATHING_MODELS = ("end_expiration", "two_sided")


def breathing_motion(rng: np.random.Generator, repeats: int, amplitude_mm: float,
                     model: str = "end_expiration") -> np.ndarray:
    """Respiratory displacements of the heart, (repeats, 2 sets (IR, PD), 2 (dx, dy)) mm.

    Mostly along one in-plane direction (within ±20° of the PE axis, fixed per slice).

    ``end_expiration`` (default): each IR heartbeat falls at a uniformly random phase ``u`` of
    the breathing cycle, whose excursion from end-expiration is ``a·cos⁶(πu)`` (Lujan et al.
    1999: the cos^2n model, n = 3, dwells at end-expiration): half of the heartbeats sit
    within 20 % of ``a`` of it, a third within 10 %; with probability 0.08 a breath is
    deeper, ``a·U(1.5, 2.5)``. The
    end-expiratory position itself varies by ``N(0, 0.05·a)`` along the main direction and
    ``N(0, 0.1·a)`` across it. The PD heartbeat (the next RR) is displaced from its IR by a
    further ``N(0, 0.1·a)`` per axis.

    ``two_sided`` (the earlier model): ``a·|N(1, 0.53)|`` with a random sign, ×2.5 for a deep
    breath (p = 0.08), ``N(0, 0.25·a)`` across, PD ``N(0, 0.1·a)`` from its IR: no repeat at 0.

    References
    ----------
    Lujan AE, Larsen EW, Balter JM, Ten Haken RK. A method for incorporating organ motion due
    to breathing into 3D dose calculations. Med Phys 1999;26:715-720.
    """
    a = amplitude_mm
    beta = np.deg2rad(90.0 + rng.normal(0.0, 20.0))
    main = np.array([np.cos(beta), np.sin(beta)])
    perp = np.array([-main[1], main[0]])
    out = np.zeros((repeats, 2, 2))
    for n in range(repeats):
        if model == "two_sided":
            mag = a * abs(rng.normal(1.0, 0.53)) * rng.choice([-1.0, 1.0])
            if rng.uniform() < 0.08:
                mag *= 2.5
            d = mag * main + rng.normal(0.0, 0.25 * a) * perp
        else:
            mag = a * np.cos(np.pi * rng.uniform()) ** 6
            if rng.uniform() < 0.08:
                mag = a * rng.uniform(1.5, 2.5)
            d = (mag + rng.normal(0.0, 0.05 * a)) * main + rng.normal(0.0, 0.1 * a) * perp
        out[n, 0] = d
        out[n, 1] = d + rng.normal(0.0, 0.1 * a, 2)
    return out


def key_repeat(displacements_mm: np.ndarray) -> int:
    """The medoid repeat of the IR displacements: ``argmin_m median_n ||d_m − d_n||``.

    The truth frame: the noise-free counterpart of the key frame a reconstruction picks from
    its images (:func:`cmrecon.recon.moco.key_frame`, the same criterion on images).

    Parameters
    ----------
    displacements_mm : (repeats, 2) float
        IR heartbeat displacement of each repeat, mm.

    Returns
    -------
    int
    """
    d = np.asarray(displacements_mm, dtype=np.float64)
    dist = np.sqrt(((d[:, None, :] - d[None, :, :]) ** 2).sum(axis=-1))
    return int(np.argmin(np.median(dist, axis=1)))
