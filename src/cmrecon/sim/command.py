"""``cmrecon simulate``: write simulated raw data (ISMRMRD HDF5) and its ground truth (npz).

Usage::

    cmrecon simulate lge -o case.h5 [--truth case_truth.npz] --seed 1 --slices 3 --repeats 8 \\
        --coils 16 --matrix 128x96 --acceleration 2 --acs-lines 24 --acs-mode embedded \\
        --partial-fourier 1 --oversampling 2 --field 1.5 --heart-rate 60 --ti 300 \\
        --resp-mm 4 --snr 25
    cmrecon simulate cine -o cine.h5 [--truth cine_truth.npz] --seed 1 --slices 1 --phases 20 \\
        --coils 10 --matrix 128x128 --acceleration 8 --acs-lines 24 --sampling equispaced \\
        --oversampling 2 --field 1.5 --heart-rate 60 --snr 20

Progress lines (one per slice) go to stderr; the file paths and a summary line to stdout.

The truth goes to ``<output stem>_truth.npz`` beside the output unless ``--truth`` names it:
a name that is an existing folder or ends in ``/`` is a folder (created if needed) that gets
``<output stem>_truth.npz``; any other name is the file, exactly as given. Both files are
written atomically (:mod:`cmrecon.io.atomic`); a file that cannot be written (disk full, no
permission) is one line on stderr and exit status 2, and leaves nothing at its name.
"""

from __future__ import annotations

import argparse
import os
import sys
from fractions import Fraction
from pathlib import Path

from cmrecon.errors import CmreconError
from cmrecon.io.atomic import make_folder

__all__ = ["register", "run_simulate_cine", "run_simulate_lge", "truth_path"]


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only where there is a default to show (not on required options)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _output_arguments(p: argparse.ArgumentParser) -> None:
    """-o, --truth, --no-truth: the files every simulate kind writes."""
    p.add_argument("-o", "--output", required=True, type=Path, help="ISMRMRD HDF5 file to write")
    p.add_argument("--truth", default=None,
                   help="ground-truth npz: a file name, written as given, or a folder (existing, or "
                        "ending in /) that gets <output stem>_truth.npz (default: beside the output)")
    p.add_argument("--no-truth", action="store_true", help="do not write the ground truth")


def _matrix(text: str) -> tuple[int, int]:
    try:
        ro, pe = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--matrix must look like 128x96 (readout x phase), got {text!r}") from exc
    return ro, pe


def _fraction(text: str) -> float:
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError) as exc:
        raise argparse.ArgumentTypeError(f"--partial-fourier must be 1, 7/8 or 6/8, got {text!r}") from exc


def truth_path(output: Path, truth: str | None) -> Path:
    """Where ``cmrecon simulate`` writes the ground truth for ``output`` and ``--truth``.

    Parameters
    ----------
    output : the raw-data file (``-o``).
    truth : ``--truth`` as typed, or None.

    Returns
    -------
    ``<output stem>_truth.npz`` beside ``output`` when ``truth`` is None; inside ``truth`` when it
    is an existing folder or ends in a path separator; otherwise ``truth`` exactly.

    Raises
    ------
    CmreconError
        The truth would overwrite the output.
    """
    name = output.stem + "_truth.npz"
    if truth is None:
        path = output.with_name(name)
    elif truth.endswith(("/", os.sep)) or Path(truth).is_dir():
        path = Path(truth) / name
    else:
        path = Path(truth)
    if path.resolve() == output.resolve():
        raise CmreconError(f"--truth {truth} is the output file {output}; give another name")
    return path


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``simulate`` (kinds ``lge`` and ``cine``) to the cmrecon CLI; handler ``args.func(args) -> int``."""
    from cmrecon.sim.lge import LgeParams

    d = LgeParams()
    sim = subparsers.add_parser("simulate", help="write simulated raw data with ground truth",
                                description="Write simulated raw data (ISMRMRD HDF5) and ground truth (npz).")
    kinds = sim.add_subparsers(dest="kind", metavar="KIND", required=True)
    p = kinds.add_parser("lge", help="free-breathing interleaved IR/PD single-shot bSSFP LGE",
                         formatter_class=_DefaultsFormatter)
    _output_arguments(p)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--slices", type=int, default=d.slices)
    p.add_argument("--repeats", type=int, default=d.repeats, help="IR/PD pairs per slice (average)")
    p.add_argument("--coils", type=int, default=d.coils)
    p.add_argument("--matrix", type=_matrix, default="{}x{}".format(*d.matrix), help="readout x phase, e.g. 128x96")
    p.add_argument("--fov", type=_matrix, default=f"{d.fov_mm[0]:g}x{d.fov_mm[1]:g}",
                   help="readout x phase field of view, mm")
    p.add_argument("--acceleration", type=int, default=d.acceleration)
    p.add_argument("--acs-lines", type=int, default=d.acs_lines)
    p.add_argument("--acs-mode", choices=("embedded", "separate"), default=d.acs_mode)
    p.add_argument("--partial-fourier", type=_fraction, default=d.partial_fourier, help="1, 7/8 or 6/8")
    p.add_argument("--oversampling", type=int, choices=(1, 2), default=d.readout_oversampling,
                   help="readout oversampling factor")
    p.add_argument("--field", type=float, choices=(1.5, 3.0), default=d.field_t, help="tesla")
    p.add_argument("--heart-rate", type=float, default=d.heart_rate_bpm, help="beats per minute")
    p.add_argument("--ti", type=float, default=d.ti_ms, help="inversion time to the k-space centre, ms")
    p.add_argument("--resp-mm", type=float, default=d.resp_amplitude_mm,
                   help="respiratory displacement scale between repeats, mm")
    p.add_argument("--snr", type=float, default=d.snr, help="PD blood SNR of one fully sampled repeat")
    p.add_argument("--slice-thickness", type=float, default=d.slice_thickness_mm, help="mm")
    p.add_argument("--noise-free", action="store_true", help="no noise on the imaging readouts")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run_simulate_lge)
    _register_cine(kinds)
    return sim


def _register_cine(kinds: argparse._SubParsersAction) -> None:
    """Add the ``cine`` kind to ``cmrecon simulate``."""
    from cmrecon.sim.cine import CineParams
    from cmrecon.sim.sampling import CINE_SAMPLING

    d = CineParams()
    p = kinds.add_parser("cine", help="ECG-triggered segmented bSSFP short-axis cine",
                         formatter_class=_DefaultsFormatter)
    _output_arguments(p)
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed: bit-identical output)")
    p.add_argument("--slices", type=int, default=d.slices, help="short-axis slices (one breath-hold each)")
    p.add_argument("--phases", type=int, default=d.phases, help="cardiac phases per slice")
    p.add_argument("--coils", type=int, default=d.coils, help="receive channels")
    p.add_argument("--matrix", type=_matrix, default="{}x{}".format(*d.matrix), help="readout x phase, e.g. 128x128")
    p.add_argument("--fov", type=_matrix, default=f"{d.fov_mm[0]:g}x{d.fov_mm[1]:g}",
                   help="readout x phase field of view, mm")
    p.add_argument("--acceleration", type=int, default=d.acceleration, help="phase-encode factor R")
    p.add_argument("--acs-lines", type=int, default=d.acs_lines, help="calibration rows about the centre (R > 1)")
    p.add_argument("--sampling", choices=CINE_SAMPLING, default=d.sampling,
                   help="the same rows in every phase, or shifted by one row per phase")
    p.add_argument("--oversampling", type=int, choices=(1, 2), default=d.readout_oversampling,
                   help="readout oversampling factor")
    p.add_argument("--field", type=float, choices=(1.5, 3.0), default=d.field_t, help="tesla")
    p.add_argument("--heart-rate", type=float, default=d.heart_rate_bpm, help="beats per minute")
    p.add_argument("--slice-thickness", type=float, default=d.slice_thickness_mm, help="mm")
    p.add_argument("--snr", type=float, default=d.snr, help="LV-blood SNR of one fully sampled phase")
    p.add_argument("--noise-free", action="store_true", help="no noise on the imaging readouts")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run_simulate_cine)


def run_simulate_lge(args: argparse.Namespace) -> int:
    """Handler of ``cmrecon simulate lge``: simulate, write the HDF5 and the truth; return 0.

    Raises
    ------
    CmreconError
        Contradicting or unusable paths (checked before simulating), or a file that cannot be
        written (``OutputError``).
    """
    from cmrecon.sim.lge import LgeParams, simulate_lge

    truth = _checked_paths(args)
    params = LgeParams(
        slices=args.slices, repeats=args.repeats, coils=args.coils, matrix=tuple(args.matrix),
        acceleration=args.acceleration, acs_lines=args.acs_lines, acs_mode=args.acs_mode,
        partial_fourier=args.partial_fourier, readout_oversampling=args.oversampling,
        field_t=args.field, heart_rate_bpm=args.heart_rate, ti_ms=args.ti,
        resp_amplitude_mm=args.resp_mm, snr=args.snr, seed=args.seed,
        fov_mm=(float(args.fov[0]), float(args.fov[1])), slice_thickness_mm=args.slice_thickness,
        add_noise=not args.noise_free)
    _write(args, truth, simulate_lge(params, progress=_progress(args)))
    return 0


def run_simulate_cine(args: argparse.Namespace) -> int:
    """Handler of ``cmrecon simulate cine``: simulate, write the HDF5 and the truth; return 0.

    Raises
    ------
    CmreconError
        Contradicting or unusable paths (checked before simulating), parameters out of range
        (``SimParamError``), or a file that cannot be written (``OutputError``).
    """
    from cmrecon.sim.cine import CineParams, simulate_cine

    truth = _checked_paths(args)
    params = CineParams(
        slices=args.slices, phases=args.phases, coils=args.coils, matrix=tuple(args.matrix),
        fov_mm=(float(args.fov[0]), float(args.fov[1])), acceleration=args.acceleration,
        acs_lines=args.acs_lines, sampling=args.sampling, readout_oversampling=args.oversampling,
        field_t=args.field, heart_rate_bpm=args.heart_rate, snr=args.snr, seed=args.seed,
        slice_thickness_mm=args.slice_thickness, add_noise=not args.noise_free)
    _write(args, truth, simulate_cine(params, progress=_progress(args)))
    return 0


def _checked_paths(args: argparse.Namespace) -> Path | None:
    """The truth path of ``args`` (None with ``--no-truth``), after refusing contradicting paths."""
    if args.output.is_dir():
        raise CmreconError(f"-o {args.output} is a folder; give an HDF5 file name")
    if args.no_truth and args.truth is not None:
        raise CmreconError("--truth and --no-truth contradict each other; give one")
    return None if args.no_truth else truth_path(args.output, args.truth)


def _progress(args: argparse.Namespace):
    """Progress callback: one line per slice on stderr, or None with ``--quiet``."""
    return None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def _write(args: argparse.Namespace, truth: Path | None, case) -> None:
    """Write ``case`` (SimCase or CineCase) to ``-o`` and its truth to ``truth``; print the paths."""
    from cmrecon.io.mrdfile import write_dataset

    make_folder(args.output.parent)
    n_acq, _ = write_dataset(args.output, case.header_xml, case.items)
    print(f"wrote {args.output} ({n_acq} acquisitions)")
    if truth is not None:
        make_folder(truth.parent)
        case.truth.save(truth)
        print(f"wrote {truth}")
