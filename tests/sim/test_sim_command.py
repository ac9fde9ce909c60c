"""``cmrecon simulate lge`` subcommand (cmrecon.sim.command)."""

import argparse

import ismrmrd
import numpy as np

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
