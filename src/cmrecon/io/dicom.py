"""DICOM MR images from the chains' MRD images, the tags a CMR reader expects.

One file per image, one series per image role (PSIR, MagIR, PD, magnitude...), MR Image Storage
(1.2.840.10008.5.1.4.1.1.4), explicit VR little endian. Geometry from the MRD image header:
``position`` is the centre of the image in the patient frame (mm), ``read_dir`` and
``phase_dir`` the directions of columns (x) and rows (y); DICOM wants the centre of the first
pixel, ``ImagePositionPatient = position − (nx/2 − ½)·Δx·read_dir − (ny/2 − ½)·Δy·phase_dir``,
and ``ImageOrientationPatient = read_dir ∖ phase_dir``, ``PixelSpacing = (Δy, Δx)``.

PSIR is stored as Gadgetron does (``ratio·1000 + 4096`` in unsigned 16 bit, so the signed ratio
fits) with ``RescaleSlope 0.001`` and ``RescaleIntercept −4.096``: a reader's real-world value is
the IR/PD ratio. Magnitude images are stored as they are (rounded, clipped to 0…65535).

References
----------
DICOM PS3.3 C.7.6.2 (Image Plane), C.8.3.1 (MR Image), C.11.2 (VOI LUT); pydicom.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Iterable

import ismrmrd
import numpy as np

from cmrecon.errors import CmreconError
from cmrecon.io.atomic import OutputError, atomic_path, make_folder

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PSIR_SCALE, PSIR_OFFSET = 1000.0, 4096.0


def _meta(img: ismrmrd.Image) -> dict:
    return dict(ismrmrd.Meta.deserialize(img.attribute_string)) if img.attribute_string else {}


def _first(value, default=""):
    if isinstance(value, (list, tuple)):
        return value[0] if value else default
    return value if value is not None else default


def _roles(meta: dict) -> list[str]:
    role = meta.get("DataRole", [])
    return [role] if isinstance(role, str) else list(role)


def image_plane(img: ismrmrd.Image) -> dict:
    """DICOM Image Plane values (position of the first pixel, orientation, spacing) of an MRD image."""
    nx, ny = int(img.matrix_size[0]), int(img.matrix_size[1])
    fov = [float(v) for v in img.field_of_view]
    dx, dy = fov[0] / nx, fov[1] / ny
    read = np.array(img.read_dir, float)
    phase = np.array(img.phase_dir, float)
    centre = np.array(img.position, float)
    first = centre - (nx / 2 - 0.5) * dx * read - (ny / 2 - 0.5) * dy * phase
    return {"ImagePositionPatient": [f"{v:.6g}" for v in first],
            "ImageOrientationPatient": [f"{v:.6g}" for v in (*read, *phase)],
            "PixelSpacing": [f"{dy:.6g}", f"{dx:.6g}"], "SliceThickness": f"{fov[2]:.6g}"}


def _pixels(img: ismrmrd.Image, psir: bool, float_ratio: bool) -> np.ndarray:
    data = np.asarray(img.data, np.float64).reshape(img.data.shape[-2:])
    if psir and float_ratio:
        data = data * PSIR_SCALE + PSIR_OFFSET
    return np.clip(np.rint(data), 0, 65535).astype(np.uint16)


def write_dicom(images: Iterable[ismrmrd.Image], out_dir: str | Path, header_xml: bytes | str | None = None,
                series_prefix: str = "cmrecon") -> list[Path]:
    """Write every image as a DICOM file under ``out_dir/<series>_<role>/``; return the paths.

    Each file is written atomically (:mod:`cmrecon.io.atomic`); if one cannot be written, the
    files this call already wrote are removed, so a failed export leaves no part of a series.

    Parameters
    ----------
    images : MRD images as the chains emit them (meta ``DataRole``, ``WindowCenter``...).
    out_dir : destination folder (created).
    header_xml : the raw data's ISMRMRD header (patient, study, field, TR/TE/TI), optional.
    series_prefix : first words of every SeriesDescription (e.g. the chain name).

    Raises
    ------
    CmreconError
        No images.
    OutputError
        A folder or file cannot be written (disk full, no permission...), naming it.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    images = list(images)
    if not images:
        raise CmreconError("no images to write as DICOM")
    hdr = None
    if header_xml:
        try:
            hdr = ismrmrd.xsd.CreateFromDocument(header_xml)
        except Exception:  # an unusable header only loses the optional tags
            hdr = None
    subject = getattr(hdr, "subjectInformation", None)
    seq = getattr(hdr, "sequenceParameters", None)
    system = getattr(hdr, "acquisitionSystemInformation", None)
    study_uid, frame_uid = generate_uid(), generate_uid()
    now = datetime.datetime.now()
    series_uid: dict[int, str] = {}
    out = Path(out_dir)
    written = []
    for img in images:
        meta = _meta(img)
        roles = _roles(meta)
        psir = "PSIR" in roles
        role = roles[0] if roles else "IMAGE"
        series = int(img.image_series_index)
        uid = series_uid.setdefault(series, generate_uid())
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        fm.MediaStorageSOPInstanceUID = generate_uid()
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        folder = out / f"{series:02d}_{role}"
        path = folder / f"IM_s{int(img.slice):03d}_i{int(img.image_index):04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=fm, preamble=b"\0" * 128)
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.Modality = "MR"
        ds.Manufacturer = "cmrecon"
        ds.PatientName = str(getattr(subject, "patientName", None) or "ANONYMOUS^")
        ds.PatientID = str(getattr(subject, "patientID", None) or "cmrecon")
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, uid, frame_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.SeriesNumber = series
        ds.InstanceNumber = int(img.image_index)
        ds.AcquisitionNumber = int(img.slice) + 1
        ds.SeriesDescription = f"{series_prefix} {role}"
        ds.ImageType = ["DERIVED", "PRIMARY", "PSIR" if psir else "MAG"]
        ds.ImageComments = " ".join(map(str, meta.get("GADGETRON_ImageComment", []))) \
            if isinstance(meta.get("GADGETRON_ImageComment"), list) else str(meta.get("GADGETRON_ImageComment", ""))
        ds.PositionReferenceIndicator = ""
        ds.Laterality = ""
        position = getattr(getattr(hdr, "measurementInformation", None), "patientPosition", None)
        ds.PatientPosition = str(getattr(position, "value", position) or "HFS")
        for key, value in image_plane(img).items():
            setattr(ds, key, value)
        # MR Image module (PS3.3 C.8.3.1): single-shot IR bSSFP
        ds.ScanningSequence = ["GR", "IR"] if psir or "MagIR" in roles else ["GR"]
        ds.SequenceVariant = ["SK", "SS"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTrainLength = ""
        ds.RepetitionTime = f"{_first(getattr(seq, 'TR', None), 0):g}" if seq is not None else ""
        ds.EchoTime = f"{_first(getattr(seq, 'TE', None), 0):g}" if seq is not None else ""
        ti = meta.get("GADGETRON_TI") or (_first(getattr(seq, "TI", None), "") if seq is not None else "")
        if ti != "" and "IR" in ds.ScanningSequence:   # Type 2C: only for inversion recovery
            ds.InversionTime = f"{float(_first(ti)):g}"
        field = getattr(system, "systemFieldStrength_T", None)
        if field:
            ds.MagneticFieldStrength = f"{float(field):g}"
        pixels = _pixels(img, psir, str(meta.get("cmrecon_float_ratio", "false")).lower() == "true")
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        if psir:
            ds.RescaleSlope, ds.RescaleIntercept = "0.001", f"{-PSIR_OFFSET / PSIR_SCALE:g}"
            ds.RescaleType = "US"
        centre, width = meta.get("WindowCenter"), meta.get("WindowWidth")
        if centre is not None and width is not None:
            c, w = float(_first(centre)), float(_first(width))
            if psir and str(meta.get("cmrecon_float_ratio", "false")).lower() == "true":
                c, w = c * PSIR_SCALE + PSIR_OFFSET, w * PSIR_SCALE
            if psir:   # the window is in real-world (rescaled) units, as PS3.3 C.11.2 says
                c, w = (c - PSIR_OFFSET) / PSIR_SCALE, w / PSIR_SCALE
            ds.WindowCenter, ds.WindowWidth = f"{c:.6g}", f"{max(w, 1e-3):.6g}"
        ds.PixelData = pixels.tobytes()
        try:
            make_folder(folder)
            with atomic_path(path) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
        except OutputError:
            for done in written:   # part of a series is not an export
                done.unlink(missing_ok=True)
            raise
        written.append(path)
    return written
