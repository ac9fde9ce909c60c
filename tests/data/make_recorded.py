"""Write the recorded simulated LGE and cine streams used by CI (run from the repository root).

    python tests/data/make_recorded.py [NAME ...]

Each LGE case is ``tests/data/sim_lge_<name>.h5`` (ISMRMRD raw dataset) plus
``tests/data/sim_lge_<name>_truth.npz`` (ground truth, :class:`cmrecon.sim.truth.SimTruth`);
each cine case ``tests/data/sim_cine_<name>.h5`` plus ``..._truth.npz``
(:class:`cmrecon.sim.cine_truth.CineTruth`). The simulators reproduce the acquisitions bit for
bit (tests/sim/test_sim_recorded.py), so a change of a simulator that alters them shows up there;
re-run this script for the cases it names and commit the new files only when the change is
intended (with no names it writes every case).

The cine cases were added with the cine chains (issue 16).

Last regenerated when the centred FFT on numpy arrays moved to ``scipy.fft`` in the input's
precision (issue 15, commit 654c325): every stream the simulators write changed at float32
rounding (relative differences ~1e-5 of a sample, the transforms' own rounding); no simulated
quantity changed. Before that, when the truth images turned to the one axis convention of
:mod:`cmrecon.axes`, ``(slices, y, x)``: only the ``_truth.npz`` files changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cmrecon.io.mrdfile import write_dataset
from cmrecon.sim.cine import CineParams, simulate_cine
from cmrecon.sim.lge import LgeParams, simulate_lge

DATA_DIR = Path(__file__).resolve().parent

#: name → parameters. Small (64×48, 8 coils) so that each file stays well under 2 MB.
RECORDED_CASES: dict[str, LgeParams] = {
    # R = 2 GRAPPA-style with 16 embedded ACS lines, two breathing repeats
    "r2_embedded": LgeParams(slices=1, repeats=2, coils=8, matrix=(64, 48), acceleration=2,
                             acs_lines=16, acs_mode="embedded", partial_fourier=1.0,
                             readout_oversampling=2, field_t=1.5, heart_rate_bpm=60.0,
                             ti_ms=300.0, resp_amplitude_mm=4.0, snr=25.0, seed=101,
                             noise_readouts=16),
    # fully sampled, one repeat, no motion
    "full": LgeParams(slices=1, repeats=1, coils=8, matrix=(64, 48), acceleration=1,
                      acs_lines=0, partial_fourier=1.0, readout_oversampling=2, field_t=1.5,
                      heart_rate_bpm=60.0, ti_ms=300.0, resp_amplitude_mm=0.0, snr=30.0,
                      seed=202, noise_readouts=16),
    # two slices, R = 2, 6/8 partial Fourier, 12 embedded ACS lines, 3 T
    "pf_2slice": LgeParams(slices=2, repeats=1, coils=8, matrix=(64, 48), acceleration=2,
                           acs_lines=12, acs_mode="embedded", partial_fourier=0.75,
                           readout_oversampling=2, field_t=3.0, heart_rate_bpm=70.0,
                           ti_ms=320.0, resp_amplitude_mm=3.0, snr=20.0, seed=303,
                           noise_readouts=16),
    # R = 3, calibration in its own heartbeats (ACS_IS_PARALLEL_CALIBRATION only), repeats
    # counted in `repetition` (Gadgetron's generic Cartesian layout), three breathing repeats
    "r3_separate_rep": LgeParams(slices=1, repeats=3, coils=8, matrix=(64, 48), acceleration=3,
                                 acs_lines=16, acs_mode="separate", partial_fourier=1.0,
                                 readout_oversampling=2, field_t=3.0, heart_rate_bpm=65.0,
                                 ti_ms=300.0, resp_amplitude_mm=5.0, repeat_counter="repetition",
                                 snr=25.0, seed=404, noise_readouts=16),
    # R = 4 with 24 embedded ACS lines, 7/8 partial Fourier, repetition counter, two repeats
    "r4_embedded_pf_rep": LgeParams(slices=1, repeats=2, coils=8, matrix=(64, 48), acceleration=4,
                                    acs_lines=24, acs_mode="embedded", partial_fourier=7.0 / 8.0,
                                    readout_oversampling=2, field_t=1.5, heart_rate_bpm=60.0,
                                    ti_ms=300.0, resp_amplitude_mm=4.0, repeat_counter="repetition",
                                    snr=30.0, seed=505, noise_readouts=16),
}


#: name → cine parameters: 64×64, 6 coils, 12 phases (a 10-20 mm heart on a 4.7 mm grid is
#: coarse but keeps each file under 2 MB and each chain run in CI short).
RECORDED_CINE_CASES: dict[str, CineParams] = {
    # the CMRxRecon 2023 layout: equispaced R = 4, 12 ACS rows, readout oversampling 2
    "r4_equispaced": CineParams(slices=1, phases=10, coils=6, matrix=(64, 64), fov_mm=(300.0, 300.0),
                                acceleration=4, acs_lines=12, sampling="equispaced", readout_oversampling=2,
                                snr=20.0, seed=611, noise_readouts=16),
    # kt-interleaved R = 8, two slices, 3 T, 70 bpm, no readout oversampling
    "r8_kt_2slice": CineParams(slices=2, phases=12, coils=6, matrix=(64, 64), fov_mm=(300.0, 300.0),
                               acceleration=8, acs_lines=12, sampling="kt_interleaved", readout_oversampling=1,
                               field_t=3.0, heart_rate_bpm=70.0, snr=20.0, seed=722, noise_readouts=16),
    # fully sampled (the per-phase baseline is then a plain SENSE combination)
    "full": CineParams(slices=1, phases=6, coils=4, matrix=(64, 64), fov_mm=(300.0, 300.0),
                       acceleration=1, readout_oversampling=1, snr=25.0, seed=833, noise_readouts=16),
}


def case_paths(kind: str, name: str, out_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """``(raw .h5, truth .npz)`` of recorded case ``name`` of ``kind`` ("lge" or "cine")."""
    return out_dir / f"sim_{kind}_{name}.h5", out_dir / f"sim_{kind}_{name}_truth.npz"


def write_case(kind: str, name: str, out_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """Simulate recorded case ``name`` of ``kind`` ("lge" or "cine") and write its HDF5 file and truth npz."""
    if kind == "cine":
        case = simulate_cine(RECORDED_CINE_CASES[name])
    else:
        case = simulate_lge(RECORDED_CASES[name])
    h5, npz = case_paths(kind, name, out_dir)
    write_dataset(h5, case.header_xml, case.items)
    case.truth.save(npz)
    return h5, npz


def main(names: list[str]) -> int:
    """Write the cases named (a name both kinds use, such as ``full``, writes both), or all."""
    cases = [("lge", n) for n in RECORDED_CASES] + [("cine", n) for n in RECORDED_CINE_CASES]
    unknown = sorted(set(names) - {n for _, n in cases})
    if unknown:
        print(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(n for _, n in cases)}",
              file=sys.stderr)
        return 2
    for kind, name in cases:
        if names and name not in names:
            continue
        h5, npz = write_case(kind, name)
        print(f"{kind} {name}: {h5.name} {h5.stat().st_size / 1e6:.2f} MB, {npz.name} "
              f"{npz.stat().st_size / 1e6:.2f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
