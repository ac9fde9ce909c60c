"""Phase-encode sampling of the simulated protocol: which lines a shot reads, and their signal."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Allowed partial-Fourier fractions along PE.
PARTIAL_FOURIER_CHOICES = (1.0, 7.0 / 8.0, 6.0 / 8.0)


@dataclass(frozen=True)
class Sampling:
    """Phase-encode lines of the protocol (indices into the full PE matrix).

    Attributes
    ----------
    centre : k-space centre line ``n_pe // 2``.
    first : first line inside the partial-Fourier range.
    imaging : lines used for imaging (every R-th through the centre).
    acs : calibration lines (empty for R = 1).
    shot : lines of each IR/PD shot, in acquisition (linear, ascending) order.
    acs_shot : lines of the separate ACS shot (empty unless acs_mode = "separate").
    """

    centre: int
    first: int
    imaging: tuple[int, ...]
    acs: tuple[int, ...]
    shot: tuple[int, ...]
    acs_shot: tuple[int, ...]


def sampling_pattern(n_pe: int, acceleration: int, acs_lines: int, acs_mode: str,
                     partial_fourier: float) -> Sampling:
    """Lines of an R-fold undersampled, partial-Fourier Cartesian acquisition with ACS.

    Parameters
    ----------
    n_pe : phase-encode matrix.
    acceleration : R; line k is an imaging line when ``(k − n_pe//2) % R == 0``.
    acs_lines : number of contiguous calibration lines centred on ``n_pe // 2``
        (``[c − acs/2, c + acs/2)``), clipped to the partial-Fourier range; unused for R = 1.
    acs_mode : "embedded" or "separate".
    partial_fourier : fraction of the PE lines acquired; the first ``n_pe − round(pf·n_pe)``
        lines are omitted.
    """
    c = n_pe // 2
    first = n_pe - int(round(partial_fourier * n_pe))
    imaging = tuple(k for k in range(first, n_pe) if (k - c) % acceleration == 0)
    acs: tuple[int, ...] = ()
    if acceleration > 1:
        acs = tuple(range(max(first, c - acs_lines // 2), min(n_pe, c - acs_lines // 2 + acs_lines)))
    if acs_mode == "embedded":
        shot, acs_shot = tuple(sorted(set(imaging) | set(acs))), ()
    else:
        shot, acs_shot = imaging, acs
    return Sampling(c, first, imaging, acs, shot, acs_shot)


def line_signals(sig_shot: np.ndarray, shot: tuple[int, ...], n_pe: int) -> np.ndarray:
    """Per-tissue signal for every PE line of the full matrix from the shot's readouts.

    Acquired lines get their own readout's signal exactly; lines skipped by acceleration get
    the signal linearly interpolated in shot position between their neighbours (the time they
    would have been read); lines outside the shot (partial Fourier) get the nearest readout's.

    Parameters
    ----------
    sig_shot : (T, n_shot) signals in shot order.
    shot : (n_shot,) ascending PE line indices.
    n_pe : PE matrix.

    Returns
    -------
    (T, n_pe) float64
    """
    pos = np.interp(np.arange(n_pe), np.asarray(shot, float), np.arange(len(shot), dtype=float))
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(shot) - 1)
    w = pos - lo
    return sig_shot[:, lo] * (1 - w) + sig_shot[:, hi] * w


#: Cine sampling schemes (:func:`cine_masks`).
CINE_SAMPLING = ("equispaced", "kt_interleaved")


def cine_masks(n_pe: int, phases: int, acceleration: int, acs_lines: int, kind: str) -> np.ndarray:
    """Phase-encode rows of every cardiac phase of a Cartesian cine (the CMRxRecon 2023 masks).

    Parameters
    ----------
    n_pe : phase-encode matrix (rows).
    phases : number of cardiac phases.
    acceleration : R; 1 samples every row.
    acs_lines : contiguous calibration rows ``[c − acs/2, c + acs/2)`` about ``c = n_pe // 2``,
        sampled in every phase (R > 1).
    kind : "equispaced" — rows ``(k − c) % R == 0``, the same in every phase; or
        "kt_interleaved" — rows ``(k − c − p) % R == 0`` in phase ``p`` (shifted by one row per
        phase), so ``R`` consecutive phases together sample every row.

    Returns
    -------
    (phases, n_pe) bool

    Raises
    ------
    ValueError
        Unknown ``kind``.

    References
    ----------
    Wang C, Lyu J, Wang S, et al. CMRxRecon: an open cardiac MRI dataset for the competition of
    accelerated image reconstruction. arXiv:2309.10836 (2023).
    """
    if kind not in CINE_SAMPLING:
        raise ValueError(f"cine sampling kind must be one of {', '.join(CINE_SAMPLING)}, got {kind!r}")
    c = n_pe // 2
    k = np.arange(n_pe)
    if acceleration <= 1:
        return np.ones((phases, n_pe), bool)
    shift = np.arange(phases)[:, None] if kind == "kt_interleaved" else np.zeros((phases, 1), int)
    return ((k[None, :] - c - shift) % acceleration == 0) | cine_acs_rows(n_pe, acceleration, acs_lines)[None, :]


def cine_acs_rows(n_pe: int, acceleration: int, acs_lines: int) -> np.ndarray:
    """(n_pe,) bool: the calibration rows ``[c − acs/2, c + acs/2)``, ``c = n_pe // 2``; none for R = 1."""
    acs = np.zeros(n_pe, bool)
    if acceleration > 1:
        acs[max(0, n_pe // 2 - acs_lines // 2):n_pe // 2 - acs_lines // 2 + acs_lines] = True
    return acs
