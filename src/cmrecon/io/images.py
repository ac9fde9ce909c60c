"""Build MRD images with correct headers from arrays and the acquisitions they came from.

Axis convention: a 2D image array is ``(y, x)`` = ``(phase-encode, readout)`` rows-by-columns,
so ``matrix_size = (x, y, 1)`` = ``(RO, PE, 1)`` as ISMRMRD stores it (x fastest).
"""

from __future__ import annotations

from typing import Any, Mapping

import ismrmrd
import numpy as np


def recon_fov_mm(header: ismrmrd.xsd.ismrmrdHeader) -> tuple[float, float, float]:
    """The reconstructed field of view ``(x, y, z)`` in mm of the first encoding."""
    fov = header.encoding[0].reconSpace.fieldOfView_mm
    return float(fov.x), float(fov.y), float(fov.z)


def make_image(data: np.ndarray, ref: ismrmrd.Acquisition | ismrmrd.AcquisitionHeader,
               fov_mm: tuple[float, float, float], *, series: int, index: int,
               image_type: int = ismrmrd.IMTYPE_MAGNITUDE,
               meta: Mapping[str, Any] | None = None) -> ismrmrd.Image:
    """Wrap an image array in an ``ismrmrd.Image`` whose header describes where it came from.

    Parameters
    ----------
    data : (y, x) real or complex array; float32, complex64 or uint16/int16 kept as given.
    ref : an acquisition of the slice (usually its centre line): position, orientation, table
        position, time stamps, and the slice/set/average/repetition/contrast/phase counters are
        copied from it.
    fov_mm : reconstructed field of view ``(x, y, z)`` in mm.
    series : ``image_series_index`` (one per image kind: magnitude, PSIR, MagIR...).
    index : ``image_index`` within the series (1-based as Gadgetron counts).
    image_type : ``ismrmrd.IMTYPE_*``.
    meta : MRD meta attributes (``DataRole``, ``WindowCenter``...), serialised as ismrmrdMeta XML.
    """
    if data.ndim != 2:
        raise ValueError(f"make_image expects a (y, x) array, got shape {data.shape}")
    img = ismrmrd.Image.from_array(np.ascontiguousarray(data))
    head = ref.getHead() if isinstance(ref, ismrmrd.Acquisition) else ref
    img.field_of_view[:] = [float(v) for v in fov_mm]
    for name in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"):
        getattr(img, name)[:] = getattr(head, name)[:]
    img.physiology_time_stamp[:] = head.physiology_time_stamp[:]
    img.acquisition_time_stamp = head.acquisition_time_stamp
    img.measurement_uid = head.measurement_uid
    idx = head.idx
    img.slice = idx.slice
    img.set = idx.set
    img.average = idx.average
    img.repetition = idx.repetition
    img.contrast = idx.contrast
    img.phase = idx.phase
    img.image_type = image_type
    img.image_series_index = series
    img.image_index = index
    if meta:
        m = ismrmrd.Meta()
        for key, value in meta.items():
            m[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
        img.attribute_string = m.serialize()
    return img



#: Display window of an IR/PD ratio: nulled myocardium ≈ 0, blood ≈ 1, scar > 1.
PSIR_WINDOW = (-0.5, 2.0)


def display_view(img: ismrmrd.Image) -> tuple[str, np.ndarray, tuple[float, float] | None]:
    """``(title, image (y, x), window or None)`` of an MRD image for a PNG a person looks at.

    A PSIR (meta DataRole PSIR) is mapped back to the IR/PD ratio by undoing
    ``GADGETRON_ScaleOffset``/``GADGETRON_ScaleRatio`` and shown on :data:`PSIR_WINDOW`, so PNGs
    of PSIRs compare with each other and with a truth ratio; other images are shown in their own
    ``WindowCenter``/``WindowWidth`` when they carry one (the cine phases of a slice share one, so
    their PNGs do not flicker), else in an automatic window.
    """
    data = np.asarray(img.data[0, 0] if img.data.ndim == 4 else img.data)
    meta = ismrmrd.Meta.deserialize(img.attribute_string) if img.attribute_string else {}
    role = meta.get("DataRole")
    role = role[0] if isinstance(role, list) else role
    if role == "PSIR":
        offset = float(meta.get("GADGETRON_ScaleOffset", 0.0))
        scale = float(meta.get("GADGETRON_ScaleRatio", 1.0))
        return f"PSIR slc{img.slice}", (data - offset) / scale, PSIR_WINDOW
    window = None
    if "WindowCenter" in meta and "WindowWidth" in meta:
        centre, width = float(meta["WindowCenter"]), float(meta["WindowWidth"])
        if width > 0:
            window = (centre - width / 2, centre + width / 2)
    if role:
        return f"{role} slc{img.slice}", data, window
    return f"series{img.image_series_index} slc{img.slice} set{img.set} ave{img.average}", data, window


def auto_window(values: np.ndarray, mask: np.ndarray, low: float = 0.0,
                percentile: float = 95.0) -> tuple[float, float]:
    """Display window ``(centre, width)`` spanning ``[low, p95 inside mask]``.

    Parameters
    ----------
    values : (y, x) float
        Image in output units.
    mask : (y, x) bool
        Pixels with signal (the chains use ``|PD| > 5σ``); all pixels when it selects none.
    low : float
        Lower end of the window, output units (0 for MagIR; the +4096 offset, i.e. ratio 0,
        for PSIR, so nulled myocardium and background are black).
    percentile : float
        Upper end: this percentile of ``values`` inside ``mask``.

    Returns
    -------
    (centre, width) : float, float
        Width at least 1 output unit.
    """
    values = np.asarray(values, dtype=np.float64)
    sel = values[mask] if np.any(mask) else values.ravel()
    hi = float(np.percentile(sel, percentile))
    width = max(hi - low, 1.0)
    return low + width / 2.0, width
