"""``cmrecon simulate lge`` subcommand (cmrecon.sim.command)."""

import argparse
import errno
import os

import ismrmrd
import numpy as np
import pytest

from cmrecon.errors import CmreconError
from cmrecon.io.atomic import OutputError
from cmrecon.sim import command


def _parser():
    ap = argparse.ArgumentParser(prog="cmrecon")
    command.register(ap.add_subparsers(dest="command"))
    return ap


def test_simulate_lge_writes_file_and_truth(tmp_path, capsys):
    out = tmp_path / "case.h5"
    args = _parser().parse_args(["simulate", "lge", "-o", str(out), "--seed", "4", "--slices", "2",
                                 "--repeats", "2", "--coils", "8", "--matrix", "48x32",
                                 "--acceleration", "2", "--acs-lines", "8", "--partial-fourier", "7/8",
                                 "--ti", "290", "--field", "3.0", "--snr", "15"])
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert "slice 1/2" in err and "slice 2/2" in err
    truth = np.load(tmp_path / "case_truth.npz")
    assert truth["ir"].shape == (2, 32, 48)                                  # (slices, y, x)
    ds = ismrmrd.Dataset(str(out), "dataset", create_if_needed=False)
    hdr = ismrmrd.xsd.CreateFromDocument(ds.read_xml_header())
    assert hdr.sequenceParameters.TI[0] == 290.0
    assert hdr.acquisitionSystemInformation.systemFieldStrength_T == 3.0
    assert hdr.encoding[0].encodingLimits.kspace_encoding_step_1.minimum == 4    # 7/8 of 32 lines
    ds.close()


SMALL = ["--seed", "2", "--slices", "1", "--repeats", "2", "--coils", "4", "--matrix", "48x32",
         "--acs-lines", "8", "--quiet"]


def test_truth_path_is_beside_the_output_inside_a_folder_or_exactly_the_name_given(tmp_path):
    out = tmp_path / "case.h5"
    assert command.truth_path(out, None) == tmp_path / "case_truth.npz"
    (tmp_path / "truths").mkdir()
    assert command.truth_path(out, str(tmp_path / "truths")) == tmp_path / "truths" / "case_truth.npz"
    assert command.truth_path(out, str(tmp_path / "new") + "/") == tmp_path / "new" / "case_truth.npz"
    assert command.truth_path(out, str(tmp_path / "t")) == tmp_path / "t"          # no .npz added
    with pytest.raises(CmreconError, match="is the output file"):
        command.truth_path(out, str(out))


def test_simulate_truth_into_a_folder_writes_stem_truth_inside_it(tmp_path):
    """It once wrote DIR.npz beside the folder."""
    folder = tmp_path / "truths"
    folder.mkdir()
    args = _parser().parse_args(["simulate", "lge", "-o", str(tmp_path / "case.h5"), "--truth", str(folder),
                                 *SMALL])
    assert args.func(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.h5", "truths"]
    assert [p.name for p in folder.iterdir()] == ["case_truth.npz"]
    assert np.load(folder / "case_truth.npz")["ir"].shape == (1, 32, 48)


def test_simulate_refuses_contradicting_paths_before_simulating(tmp_path, capsys):
    for extra, needle in ((["--truth", str(tmp_path / "t.npz"), "--no-truth"], "contradict"),
                          (["--truth", str(tmp_path / "case.h5")], "is the output file")):
        args = _parser().parse_args(["simulate", "lge", "-o", str(tmp_path / "case.h5"), *extra, *SMALL])
        with pytest.raises(CmreconError, match=needle):
            args.func(args)
    args = _parser().parse_args(["simulate", "lge", "-o", str(tmp_path), *SMALL])
    with pytest.raises(CmreconError, match="is a folder"):
        args.func(args)
    assert list(tmp_path.iterdir()) == []


def test_simulate_leaves_no_truth_when_it_cannot_be_written(tmp_path, monkeypatch):
    def full(fh, **arrays):   # the disk fills up part way through the npz
        fh.write(b"PK")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(np, "savez_compressed", full)
    args = _parser().parse_args(["simulate", "lge", "-o", str(tmp_path / "case.h5"), *SMALL])
    with pytest.raises(OutputError, match=r"case_truth\.npz: No space left on device"):
        args.func(args)
    assert [p.name for p in tmp_path.iterdir()] == ["case.h5"]      # the raw data is whole
