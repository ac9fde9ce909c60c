"""Ground truth of a simulated cine case: what a cine reconstruction is judged against.

Images follow :mod:`cmrecon.axes`: ``(slices, phases, y, x)`` (y = phase-encode rows, x =
readout columns) at the reconstructed matrix, the grid of a chain's images. Stored as an
``.npz`` whose keys are the field names (``docs/simulator.md``); ``truth[name]`` reads a
CineTruth and a loaded ``.npz`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrecon.sim.truth import NpzRecord

__all__ = ["CineTruth"]


@dataclass(frozen=True, eq=False)
class CineTruth(NpzRecord):
    """Noise-free cine images, masks, motion and the subject's parameters of one simulated case.

    ``S`` slices, ``P`` cardiac phases, ``C`` coils, ``T`` tissue classes, ``(y, x)`` the
    reconstructed matrix.

    Attributes
    ----------
    images : (S, P, y, x) complex64, noise-free, fully sampled, prewhitened images combined with
        the true maps (RSS = 1), SNR units (coil shading ‖W·C‖ and background phase included):
        the heart at each phase's nominal trigger time.
    labels : (S, P, y, x) uint8, majority tissue label per pixel and phase (names in ``label_names``).
    coil_maps : (S, C, y, x) complex64, true maps in the prewhitened coil basis, RSS = 1.
    background_phase : (S, y, x) float32, φ_b in rad.
    body_mask : (S, y, x) bool, labels ≠ air (the body does not move).
    heart_mask : (S, y, x) bool, the heart (ventricles, blood pools, papillary muscles, scar) in
        any phase and 10 mm around.
    dynamic_mask : (S, y, x) bool, body pixels whose temporal SD of ``|images|`` is in the top
        10 % of the body's.
    static_mask : (S, y, x) bool, body pixels whose temporal SD is in the bottom 50 %.
    trigger_times_ms : (P,) float64, nominal time of each phase after the R wave,
        ``p·seg·TR + seg·TR/2``.
    contraction : (P,) float64, the cardiac contraction c(t_p) (0 end-diastole, 1 end-systole).
    sampling_mask : (P, n_pe) bool, rows sampled in each phase.
    lv_area_mm2 : (S, P) float64, area inside the LV endocardium (papillary muscles included).
    heart_shift_mm : (S, P, 2) float32, (dx, dy) translation of the heart from end-diastole, mm.
    lv_ef, rv_ef : () float64, the subject's LV / RV fractional area change at c = 1.
    snr_scale : (S,) float64, object scale that gave the requested SNR.
    psi : (C, C) complex128, noise covariance per k-space sample.
    tissue_names, tissue_t1_ms, tissue_t2_ms, tissue_pd : (T,) the subject's native tissues.
    tissue_signal : (T,) float32, bSSFP steady-state signal of each class (M0 = PD units).
    label_names : (labels,) str.
    pixel_mm : (2,) float32, (dx, dy).
    params_json : () str, the CineParams.
    """

    images: np.ndarray
    labels: np.ndarray
    coil_maps: np.ndarray
    background_phase: np.ndarray
    body_mask: np.ndarray
    heart_mask: np.ndarray
    dynamic_mask: np.ndarray
    static_mask: np.ndarray
    trigger_times_ms: np.ndarray
    contraction: np.ndarray
    sampling_mask: np.ndarray
    lv_area_mm2: np.ndarray
    heart_shift_mm: np.ndarray
    lv_ef: np.ndarray
    rv_ef: np.ndarray
    snr_scale: np.ndarray
    psi: np.ndarray
    tissue_names: np.ndarray
    tissue_t1_ms: np.ndarray
    tissue_t2_ms: np.ndarray
    tissue_pd: np.ndarray
    tissue_signal: np.ndarray
    label_names: np.ndarray
    pixel_mm: np.ndarray
    params_json: np.ndarray
