"""DICOM export: read back with pydicom (ratio, geometry, tags) and checked by dciodvfy if installed."""

from __future__ import annotations

import shutil
import subprocess

import ismrmrd
import numpy as np
import pydicom
import pytest

from cmrecon.chain.definition import resolve
from cmrecon.cli import main
from cmrecon.evaluate import psir_ratio_images, with_float_ratio
from cmrecon.io.mrdfile import iter_items, read_header_xml

from paths import DATA

H5 = DATA / "sim_lge_r2_embedded.h5"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom")
    assert main(["replay", "-i", str(H5), "-c", "psir_classic", "--in-process", "--dicom", str(out)]) == 0
    return out


def test_psir_reads_back_as_the_ratio_with_the_tags_a_reader_needs(exported):
    (psir_file,) = (exported / "01_PSIR").glob("*.dcm")
    ds = pydicom.dcmread(psir_file)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY", "PSIR"]
    assert ds.SeriesDescription == "psir_classic PSIR" and float(ds.InversionTime) == 300.0
    ratio = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = psir_ratio_images(with_float_ratio(resolve("psir_classic")), read_header_xml(H5),
                                 list(iter_items(H5)))[0]
    np.testing.assert_allclose(ratio, expected, atol=0.0006)      # the 1/1000 stored step
    (magir_file,) = (exported / "02_MagIR").glob("*.dcm")
    mag = pydicom.dcmread(magir_file)
    assert list(mag.ImageType)[2] == "MAG" and mag.SeriesInstanceUID != ds.SeriesInstanceUID
    assert mag.StudyInstanceUID == ds.StudyInstanceUID


def test_geometry_puts_the_image_centre_at_the_mrd_position(exported):
    (psir_file,) = (exported / "01_PSIR").glob("*.dcm")
    ds = pydicom.dcmread(psir_file)
    items = list(iter_items(H5))
    from cmrecon.chain.runner import run_chain
    img = [im for im in run_chain(resolve("psir_classic"), read_header_xml(H5), items)
           if isinstance(im, ismrmrd.Image)][0]
    first = np.array(ds.ImagePositionPatient, float)
    row_dir, col_dir = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    centre = first + (ds.Columns / 2 - 0.5) * dx * row_dir + (ds.Rows / 2 - 0.5) * dy * col_dir
    np.testing.assert_allclose(centre, np.array(img.position, float), atol=1e-3)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed (.ci/run installs it)")
def test_dciodvfy_finds_no_errors(exported):
    for f in sorted(exported.rglob("*.dcm")):
        out = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (f.name, errors)


def _psir_classic_images():
    from cmrecon.chain.runner import run_chain
    return [im for im in run_chain(resolve("psir_classic"), read_header_xml(H5), list(iter_items(H5)))
            if isinstance(im, ismrmrd.Image)]


def test_a_failed_export_leaves_no_dicom_file_behind(tmp_path, monkeypatch):
    """The second file hits a full disk: the first one goes too, and no temporary file stays."""
    import errno
    import os

    from pydicom.dataset import FileDataset

    from cmrecon.io.atomic import OutputError
    from cmrecon.io.dicom import write_dicom
    images = _psir_classic_images()
    real_save, calls = FileDataset.save_as, []

    def save_as(self, filename, **kwargs):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(self, filename, **kwargs)
    monkeypatch.setattr(FileDataset, "save_as", save_as)
    with pytest.raises(OutputError, match=r"cannot write .*\.dcm: No space left on device"):
        write_dicom(images, tmp_path / "dicom", read_header_xml(H5), "psir_classic")
    assert len(calls) == 2 and [p for p in (tmp_path / "dicom").rglob("*") if p.is_file()] == []
