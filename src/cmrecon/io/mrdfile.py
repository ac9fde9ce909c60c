"""ISMRMRD HDF5 files: raw datasets in, reconstructed images out (Gadgetron client layout).

A raw dataset is ``/<group>/xml`` (the header), ``/<group>/data`` (acquisitions) and optionally
``/<group>/waveforms``. Images are written as the Gadgetron client writes them:
``/<group>/image_<image_series_index>/{header,attributes,data}``.

References
----------
ismrmrd/ismrmrd ``doc``: the ISMRMRD HDF5 layout; gadgetron ``apps/clients/gadgetron_ismrmrd_client``.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

import h5py
import ismrmrd
import numpy as np
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype, waveform_dtype, waveform_header_dtype

from cmrecon.errors import CmreconError

RawItem = Union[ismrmrd.Acquisition, ismrmrd.Waveform]
_CHUNK_ROWS = 512


class MrdFileError(CmreconError):
    """An ISMRMRD HDF5 file that is missing, unreadable or lacks the expected group."""


def _open_group(path: str | Path, group: str) -> tuple[h5py.File, h5py.Group]:
    try:
        f = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as exc:
        raise MrdFileError(f"cannot open ISMRMRD file {path}: {exc}") from exc
    if group not in f:
        groups = ", ".join(sorted(f.keys())) or "none"
        f.close()
        raise MrdFileError(f"{path} has no group '{group}' (groups: {groups})")
    return f, f[group]


def read_header_xml(path: str | Path, group: str = "dataset") -> bytes:
    """Return the ISMRMRD XML header of a raw dataset, as stored (bytes, not re-serialised)."""
    f, g = _open_group(path, group)
    with f:
        if "xml" not in g:
            raise MrdFileError(f"{path}:/{group} has no 'xml' header")
        raw = g["xml"][0]
    return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")


def count_items(path: str | Path, group: str = "dataset") -> tuple[int, int]:
    """Return ``(n_acquisitions, n_waveforms)`` stored in a raw dataset."""
    f, g = _open_group(path, group)
    with f:
        return (g["data"].shape[0] if "data" in g else 0,
                g["waveforms"].shape[0] if "waveforms" in g else 0)


def _acq_from_row(row: np.void) -> ismrmrd.Acquisition:
    acq = ismrmrd.Acquisition(row["head"])
    acq.data[:] = row["data"].view(np.complex64).reshape(acq.active_channels, acq.number_of_samples)
    if acq.traj.size:
        acq.traj[:] = row["traj"].reshape(acq.number_of_samples, acq.trajectory_dimensions)
    return acq


def _wav_from_row(row: np.void) -> ismrmrd.Waveform:
    head = np.zeros((1,), dtype=waveform_header_dtype)
    head[0] = row["head"]
    wav = ismrmrd.Waveform(head)
    wav.data[:] = row["data"].view(np.uint32).reshape(wav.channels, wav.number_of_samples)
    return wav


def _rows(ds: h5py.Dataset) -> Iterator[np.void]:
    for start in range(0, ds.shape[0], _CHUNK_ROWS):
        yield from ds[start:start + _CHUNK_ROWS]


def iter_items(path: str | Path, group: str = "dataset") -> Iterator[RawItem]:
    """Yield acquisitions and waveforms in acquisition order, as a scanner would stream them.

    Acquisitions come in stored order; each waveform is placed before the first acquisition
    whose ``acquisition_time_stamp`` is later than the waveform's ``time_stamp`` (both in
    scanner ticks), which is where it was recorded. Rows are read in chunks, so a file of
    any size streams in bounded memory.
    """
    f, g = _open_group(path, group)
    with f:
        acqs = _rows(g["data"]) if "data" in g else iter(())
        wavs = _rows(g["waveforms"]) if "waveforms" in g else iter(())
        pending_wav = next(wavs, None)
        for row in acqs:
            stamp = int(row["head"]["acquisition_time_stamp"])
            while pending_wav is not None and int(pending_wav["head"]["time_stamp"]) < stamp:
                yield _wav_from_row(pending_wav)
                pending_wav = next(wavs, None)
            yield _acq_from_row(row)
        while pending_wav is not None:
            yield _wav_from_row(pending_wav)
            pending_wav = next(wavs, None)


def make_acquisition(data: np.ndarray, flags: Iterable[int] = (), idx: dict[str, int] | None = None,
                     **head: Any) -> ismrmrd.Acquisition:
    """An acquisition holding ``data``, with the given header fields, encoding counters and flags.

    Parameters
    ----------
    data : (channels, samples) complex64 readout.
    flags : ``ismrmrd.ACQ_*`` flags to set.
    idx : encoding counters by name (``kspace_encode_step_1``, ``set``, ``slice``, ``average``...).
    **head : other header fields by name; a vector field (``position``, ``read_dir``,
        ``physiology_time_stamp``, ``user_float``...) takes a sequence that fills its first entries.
    """
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, np.complex64))
    for name, value in head.items():
        if np.ndim(value):
            getattr(acq, name)[:len(value)] = value
        else:
            setattr(acq, name, value)
    for name, value in (idx or {}).items():
        setattr(acq.idx, name, value)
    for flag in flags:
        acq.set_flag(flag)
    return acq


def write_dataset(path: str | Path, header_xml: str | bytes, items: Iterable[RawItem],
                  group: str = "dataset") -> tuple[int, int]:
    """Write a raw ISMRMRD dataset (header, acquisitions, waveforms); overwrite ``path``.

    Returns ``(n_acquisitions, n_waveforms)``.
    """
    acqs, wavs = [], []
    for item in items:
        if isinstance(item, ismrmrd.Acquisition):
            acqs.append(item)
        elif isinstance(item, ismrmrd.Waveform):
            wavs.append(item)
        else:
            raise TypeError(f"a raw dataset holds acquisitions and waveforms, not {type(item).__name__}")
    acq_rows = np.zeros((len(acqs),), dtype=acquisition_dtype)
    for i, acq in enumerate(acqs):
        acq_rows[i]["head"] = np.frombuffer(acq.getHead(), dtype=acquisition_header_dtype)[0]
        acq_rows[i]["data"] = np.ascontiguousarray(acq.data, np.complex64).view(np.float32).ravel()
        acq_rows[i]["traj"] = np.ascontiguousarray(acq.traj, np.float32).ravel()
    wav_rows = np.zeros((len(wavs),), dtype=waveform_dtype)
    for i, wav in enumerate(wavs):
        wav_rows[i]["head"] = np.frombuffer(wav.getHead(), dtype=waveform_header_dtype)[0]
        wav_rows[i]["data"] = np.ascontiguousarray(wav.data, np.uint32).ravel()
    xml = header_xml.encode("utf-8") if isinstance(header_xml, str) else header_xml
    with h5py.File(path, "w") as f:
        g = f.create_group(group)
        g.create_dataset("xml", data=np.array([xml], dtype=object), dtype=h5py.special_dtype(vlen=bytes))
        if len(acq_rows):
            g.create_dataset("data", data=acq_rows, maxshape=(None,), chunks=True)
        if len(wav_rows):
            g.create_dataset("waveforms", data=wav_rows, maxshape=(None,), chunks=True)
    return len(acq_rows), len(wav_rows)


def default_group_name(now: datetime.datetime | None = None) -> str:
    """The group name the Gadgetron client uses when none is given: the current date and time."""
    return (now or datetime.datetime.now()).strftime("%Y-%m-%d %H:%M:%S.%f")


class ImageFileWriter:
    """Append images to ``<path>:/<group>/image_<series>`` as they arrive (Gadgetron client layout)."""

    def __init__(self, path: str | Path, group: str | None = None) -> None:
        self.path = Path(path)
        self.group = group or default_group_name()
        self._ds = ismrmrd.Dataset(str(self.path), self.group, create_if_needed=True)
        self.count = 0

    def append(self, image: ismrmrd.Image) -> None:
        self._ds.append_image(f"image_{image.image_series_index}", image)
        self.count += 1

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> "ImageFileWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_images(path: str | Path, group: str | None = None) -> dict[str, list[ismrmrd.Image]]:
    """Read every image series of one group (the only/last group when ``group`` is None).

    Returns ``{"image_<series>": [Image, ...]}`` in stored order.
    """
    with h5py.File(path, "r") as f:
        if group is None:
            if not f.keys():
                raise MrdFileError(f"{path} holds no image group")
            group = sorted(f.keys())[-1]
        if group not in f:
            raise MrdFileError(f"{path} has no group '{group}'")
        names = [k for k in f[group].keys() if k.startswith("image_")]
    out: dict[str, list[ismrmrd.Image]] = {}
    with ismrmrd.Dataset(str(path), group, create_if_needed=False, mode="r") as ds:
        for name in sorted(names):
            out[name] = [ds.read_image(name, i) for i in range(ds.number_of_images(name))]
    return out
