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
import io
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

import h5py
import ismrmrd
import numpy as np
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype, waveform_dtype, waveform_header_dtype

from cmrecon.errors import CmreconError
from cmrecon.io.atomic import OutputError, atomic_path

RawItem = Union[ismrmrd.Acquisition, ismrmrd.Waveform]
_CHUNK_ROWS = 512


class MrdFileError(CmreconError):
    """An ISMRMRD HDF5 file that is missing, unreadable, corrupt or lacks the expected group."""


# what h5py raises for damaged storage: a bad object header is a KeyError, a bad chunk an OSError...
_H5_DAMAGE = (KeyError, OSError, RuntimeError, ValueError, TypeError, IndexError)


def _why(exc: BaseException) -> object:
    """An h5py exception's words (a KeyError's str() would quote them)."""
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else exc


def _open_group(path: str | Path, group: str) -> tuple[h5py.File, h5py.Group]:
    try:
        f = h5py.File(path, "r")
    except _H5_DAMAGE as exc:
        raise MrdFileError(f"cannot open ISMRMRD file {path}: {_why(exc)}") from exc
    try:
        if group not in f:
            groups = ", ".join(sorted(f.keys())) or "none"
            raise MrdFileError(f"{path} has no group '{group}' (groups: {groups})")
        return f, f[group]
    except _H5_DAMAGE as exc:
        f.close()
        raise MrdFileError(f"{path}:/{group} cannot be opened: {_why(exc)}") from exc
    except MrdFileError:
        f.close()
        raise


#: Every read of a raw file opens it, reads, and closes it under this lock; no handle outlives one
#: chunk of rows. With h5py 3.16 / HDF5 2.0, closing one handle of a file while another thread read
#: the same file through its own handle crashed the process (a segfault: 16 clients replaying one
#: file from one process, tests/io/test_mrdfile.py).
_H5_LOCK = threading.Lock()


@contextmanager
def _locked_group(path: str | Path, group: str) -> Iterator[h5py.Group]:
    """``/<group>`` of ``path``, open (under :data:`_H5_LOCK`) for the block only."""
    with _H5_LOCK:
        f, g = _open_group(path, group)
        with f:
            yield g


def _member(path: str | Path, g: h5py.Group, name: str) -> h5py.Dataset | None:
    """``g[name]`` (None when absent); MrdFileError naming it when it is there but cannot be opened."""
    try:
        return g[name] if name in g else None
    except _H5_DAMAGE as exc:
        raise MrdFileError(f"{path}:{g.name}/{name} cannot be opened: {_why(exc)}") from exc


def read_header_xml(path: str | Path, group: str = "dataset") -> bytes:
    """Return the ISMRMRD XML header of a raw dataset, as stored (bytes, not re-serialised)."""
    with _locked_group(path, group) as g:
        ds = _member(path, g, "xml")
        if ds is None:
            raise MrdFileError(f"{path}:/{group} has no 'xml' header")
        try:
            raw = ds[0]
        except _H5_DAMAGE as exc:
            raise MrdFileError(f"{path}:/{group}/xml cannot be read: {_why(exc)}") from exc
    return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")


_ROW_FIELDS = {"acquisition": ("head", "data", "traj"), "waveform": ("head", "data")}


def _row_problem(kind: str, row: np.void) -> str | None:
    """Why a stored row cannot be decoded (its header's sizes disagree with its arrays), or None.

    Checked before an item is built from the header, so a corrupt header claiming
    65535 channels x 65535 samples is refused instead of allocating 32 GB.
    """
    head = row["head"]
    if kind == "acquisition":
        channels, samples = int(head["active_channels"]), int(head["number_of_samples"])
        dims = int(head["trajectory_dimensions"])
        if row["data"].size != 2 * channels * samples:
            return (f"its header says {channels} channels x {samples} samples "
                    f"({2 * channels * samples} floats), its data holds {row['data'].size}")
        if row["traj"].size != dims * samples:
            return (f"its header says a trajectory of {samples} samples x {dims} dimensions, "
                    f"its traj holds {row['traj'].size} floats")
    else:
        channels, samples = int(head["channels"]), int(head["number_of_samples"])
        if row["data"].size != channels * samples:
            return (f"its header says {channels} channels x {samples} samples, "
                    f"its data holds {row['data'].size} values")
    return None


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


def _checked_rows(path: str | Path, group: str, name: str, kind: str) -> Iterator[tuple[int, np.void]]:
    """``(row number, row)`` of table ``/<group>/<name>``, read in chunks; each row checked by
    :func:`_row_problem`. The file is open only while a chunk is read (:data:`_H5_LOCK`).
    """
    where = f"{path}:/{group}/{name}"
    with _locked_group(path, group) as g:
        ds = _member(path, g, name)
        try:
            dtype, rows = ds.dtype, ds.shape[0]
        except _H5_DAMAGE as exc:
            raise MrdFileError(f"{where} has an unreadable row type: {_why(exc)}") from exc
    names = dtype.names or ()
    head_size = (acquisition_header_dtype if kind == "acquisition" else waveform_header_dtype).itemsize
    if any(field not in names for field in _ROW_FIELDS[kind]) or dtype["head"].itemsize != head_size:
        raise MrdFileError(f"{where} is not an ISMRMRD {kind} table (fields: {', '.join(names) or 'none'})")
    for start in range(0, rows, _CHUNK_ROWS):
        with _locked_group(path, group) as g:
            try:
                chunk = g[name][start:start + _CHUNK_ROWS]
            except _H5_DAMAGE as exc:
                raise MrdFileError(f"{where} rows {start}-{min(start + _CHUNK_ROWS, rows) - 1} "
                                   f"cannot be read: {_why(exc)}") from exc
        for i, row in enumerate(chunk, start):
            problem = _row_problem(kind, row)
            if problem:
                raise MrdFileError(f"{where} row {i} is a corrupt {kind}: {problem}")
            yield i, row


def _stored_rows(path: str | Path, group: str) -> Iterator[tuple[str, int, np.void]]:
    """``(kind, row number, row)`` in acquisition order (waveforms placed by their time stamps)."""
    with _locked_group(path, group) as g:
        tables = {name: _member(path, g, name) is not None for name in ("data", "waveforms")}
    acqs = _checked_rows(path, group, "data", "acquisition") if tables["data"] else iter(())
    wavs = _checked_rows(path, group, "waveforms", "waveform") if tables["waveforms"] else iter(())
    pending_wav = next(wavs, None)
    for i, row in acqs:
        stamp = int(row["head"]["acquisition_time_stamp"])
        while pending_wav is not None and int(pending_wav[1]["head"]["time_stamp"]) < stamp:
            yield "waveform", *pending_wav
            pending_wav = next(wavs, None)
        yield "acquisition", i, row
    while pending_wav is not None:
        yield "waveform", *pending_wav
        pending_wav = next(wavs, None)


def iter_items(path: str | Path, group: str = "dataset") -> Iterator[RawItem]:
    """Yield acquisitions and waveforms in acquisition order, as a scanner would stream them.

    Acquisitions come in stored order; each waveform is placed before the first acquisition
    whose ``acquisition_time_stamp`` is later than the waveform's ``time_stamp`` (both in
    scanner ticks), which is where it was recorded. Rows are read in chunks, so a file of
    any size streams in bounded memory.

    Raises
    ------
    MrdFileError
        The file or group cannot be opened, a chunk of rows cannot be read, or a row's header
        disagrees with its arrays; the file, table and row are named.
    """
    for kind, i, row in _stored_rows(path, group):
        try:
            yield _acq_from_row(row) if kind == "acquisition" else _wav_from_row(row)
        except (ValueError, TypeError) as exc:
            raise MrdFileError(f"{path}:/{group} {kind} row {i} cannot be decoded: {exc}") from exc


def check_dataset(path: str | Path, group: str = "dataset") -> tuple[int, int]:
    """Read the header and every row of a raw dataset; return ``(n_acquisitions, n_waveforms)``.

    The rows are read and checked as :func:`iter_items` reads them (without building items),
    so a replay can refuse a corrupt file, naming the row, before it sends anything.

    Raises
    ------
    MrdFileError
        As :func:`iter_items`; also a missing or unreadable ``xml`` header, or one that is not
        well-formed XML (its schema is the server's to judge).
    """
    try:
        ET.fromstring(read_header_xml(path, group))
    except ET.ParseError as exc:
        raise MrdFileError(f"{path}:/{group}/xml is not well-formed XML: {exc}") from exc
    counts = Counter(kind for kind, _, _ in _stored_rows(path, group))
    return counts["acquisition"], counts["waveform"]


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
    """Write a raw ISMRMRD dataset (header, acquisitions, waveforms); replace ``path`` atomically.

    The HDF5 file is built in memory and written through :func:`cmrecon.io.atomic.atomic_path`:
    ``path`` holds the whole dataset, or after a failure is as it was. Returns
    ``(n_acquisitions, n_waveforms)``.

    Raises
    ------
    OutputError
        The file cannot be written (disk full, no permission...), naming it and the cause.
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
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        g = f.create_group(group)
        g.create_dataset("xml", data=np.array([xml], dtype=object), dtype=h5py.special_dtype(vlen=bytes))
        if len(acq_rows):
            g.create_dataset("data", data=acq_rows, maxshape=(None,), chunks=True)
        if len(wav_rows):
            g.create_dataset("waveforms", data=wav_rows, maxshape=(None,), chunks=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())
    return len(acq_rows), len(wav_rows)


def default_group_name(now: datetime.datetime | None = None) -> str:
    """The group name the Gadgetron client uses when none is given: the current date and time."""
    return (now or datetime.datetime.now()).strftime("%Y-%m-%d %H:%M:%S.%f")


class ImageFileWriter:
    """Add images to ``<path>:/<group>/image_<series>`` (Gadgetron client layout), atomically.

    As the Gadgetron client does, an existing file keeps its groups and gains this one. The file
    is assembled in memory (from the existing file's bytes, if any) and written by :meth:`close`
    in one go through :func:`cmrecon.io.atomic.atomic_path`: ``path`` then holds every image, or
    after a failure is as it was. Leaving a ``with`` block by an exception writes nothing.

    Raises
    ------
    MrdFileError
        ``path`` exists and is not an HDF5 file (on construction).
    OutputError
        ``path`` cannot be read (on construction) or written (on close).
    """

    def __init__(self, path: str | Path, group: str | None = None) -> None:
        self.path = Path(path)
        self.group = group or default_group_name()
        try:
            existing = self.path.read_bytes() if self.path.is_file() else b""
        except OSError as exc:
            raise OutputError(f"cannot read {self.path} to add images to it: {exc.strerror or exc}") from exc
        self._buf = io.BytesIO(existing)
        try:
            self._ds: ismrmrd.Dataset | None = ismrmrd.Dataset(self._buf, self.group, mode="a")
        except OSError as exc:
            raise MrdFileError(f"{self.path} exists and is not an HDF5 file ({exc}); images are "
                               f"added to an existing file as a new group") from exc
        self.count = 0

    def append(self, image: ismrmrd.Image) -> None:
        if self._ds is None:
            raise ValueError(f"{self.path}: the image file is already closed")
        self._ds.append_image(f"image_{image.image_series_index}", image)
        self.count += 1

    def close(self) -> None:
        """Write the file with every appended image (atomically); later calls do nothing."""
        if self._ds is None:
            return
        self._ds.close()
        self._ds = None
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(self._buf.getbuffer())

    def discard(self) -> None:
        """Drop the appended images; ``path`` is left as it was."""
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def __enter__(self) -> "ImageFileWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


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
