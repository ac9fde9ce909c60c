"""Write the recorded simulated LGE streams used by CI (run from the repository root).

    python tests/data/make_recorded.py

Each case is ``tests/data/sim_lge_<name>.h5`` (ISMRMRD raw dataset) plus
``tests/data/sim_lge_<name>_truth.npz`` (ground truth, :class:`cmrecon.sim.truth.SimTruth`).
``cmrecon.sim.lge.simulate_lge(RECORDED_CASES[name])`` reproduces the acquisitions bit for bit
(tests/sim/test_sim_recorded.py), so a change of the simulator that alters them shows up there;
re-run this script and commit the new files only when the change is intended.

Last regenerated when the truth images turned to the one axis convention of :mod:`cmrecon.axes`,
``(slices, y, x)`` (they were ``(slices, RO, PE)``): only the ``_truth.npz`` files changed, the
``.h5`` streams are byte for byte the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cmrecon.io.mrdfile import write_dataset
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


def write_case(name: str, out_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """Simulate one recorded case and write its HDF5 file and truth npz; return both paths."""
    case = simulate_lge(RECORDED_CASES[name])
    h5 = out_dir / f"sim_lge_{name}.h5"
    npz = out_dir / f"sim_lge_{name}_truth.npz"
    write_dataset(h5, case.header_xml, case.items)
    case.truth.save(npz)
    return h5, npz


def main() -> int:
    for name in RECORDED_CASES:
        h5, npz = write_case(name)
        print(f"{name}: {h5.name} {h5.stat().st_size / 1e6:.2f} MB, {npz.name} {npz.stat().st_size / 1e6:.2f} MB",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
