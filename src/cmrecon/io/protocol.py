"""The ISMRMRD (MRD v1) stream protocol that Gadgetron and its client speak over TCP.

Every message is a little-endian ``uint16`` id followed by its payload (docs/protocol.md).
Acquisition, image and waveform payloads are decoded by the ``ismrmrd`` package's own
classes; this module adds what that package lacks: bounded lengths (a peer cannot make us
allocate gigabytes), truncation detection, and the QUERY/RESPONSE/ERROR messages.

References
----------
gadgetron/gadgetron ``core/MessageID.h``; ismrmrd/ismrmrd ``include/ismrmrd/serialization.h``.
"""

from __future__ import annotations

import ctypes
import io
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import BinaryIO, Union

import ismrmrd
import numpy as np
from ismrmrd.image import get_dtype_from_data_type

from cmrecon.errors import ProtocolError

CONFIG_FILE_BYTES = 1024
ACQ_HEADER_BYTES = ctypes.sizeof(ismrmrd.AcquisitionHeader)  # 340
IMAGE_HEADER_BYTES = ctypes.sizeof(ismrmrd.ImageHeader)  # 198
WAVEFORM_HEADER_BYTES = ctypes.sizeof(ismrmrd.WaveformHeader)  # 40


class MessageId(IntEnum):
    """Message ids of the stream protocol (Gadgetron ``core/MessageID.h``)."""

    CONFIG_FILE = 1
    CONFIG_TEXT = 2
    HEADER = 3
    CLOSE = 4
    TEXT = 5
    QUERY = 6
    RESPONSE = 7
    ERROR = 8
    ACQUISITION = 1008
    IMAGE = 1022
    WAVEFORM = 1026


@dataclass(frozen=True)
class ConfigFile:
    """CONFIG_FILE (1): the name of a chain the server resolves, e.g. ``fft_rss.xml``."""

    name: str


@dataclass(frozen=True)
class ConfigText:
    """CONFIG_TEXT (2): a whole chain definition (Gadgetron chain XML) sent inline."""

    text: str


@dataclass(frozen=True)
class Header:
    """HEADER (3): the ISMRMRD XML header, kept as the bytes received (never re-serialised)."""

    xml: bytes


@dataclass(frozen=True)
class Close:
    """CLOSE (4): end of stream."""


@dataclass(frozen=True)
class Text:
    """TEXT (5): free text; servers report errors to clients this way (``ERR ...``)."""

    text: str


@dataclass(frozen=True)
class Query:
    """QUERY (6): a question such as ``gadgetron::version``, answered by a RESPONSE."""

    reserved: int
    correlation_id: int
    text: str


@dataclass(frozen=True)
class Response:
    """RESPONSE (7): the answer to the QUERY with the same correlation id."""

    correlation_id: int
    text: str


@dataclass(frozen=True)
class Error:
    """ERROR (8): a failure reported by an external or distributed peer."""

    text: str


Message = Union[ConfigFile, ConfigText, Header, Close, Text, Query, Response, Error,
                ismrmrd.Acquisition, ismrmrd.Image, ismrmrd.Waveform]


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one message may ask us to allocate.

    Defaults are far above any real cardiac protocol (a 1024-sample readout of 128 channels is
    1 MiB) yet stop a corrupt length field from taking the process's memory.
    """

    max_text_bytes: int = 16 * 2**20
    max_samples: int = 16384
    max_channels: int = 256
    max_trajectory_dims: int = 4
    max_image_elements: int = 2**28
    max_waveform_elements: int = 2**24


class MessageReader:
    """Decode protocol messages from a binary stream, one at a time.

    Bulk payloads (trajectory, samples, image pixels) are read with ``readinto`` straight into
    the arrays the decoded items keep: one copy from the stream's buffer (or the socket) per
    readout, where the ``ismrmrd`` package's own deserializer makes three (``bytes``, zeroed
    array, copy).

    Parameters
    ----------
    stream : binary file object with ``read(n)`` and preferably ``readinto(b)``
        (``socket.makefile('rb')``, :class:`cmrecon.server.tcp.SocketStream`, a file).
    limits : bounds on lengths; a message over them raises :class:`ProtocolError`.
    """

    def __init__(self, stream: BinaryIO, limits: Limits | None = None) -> None:
        self._stream = stream
        self._readinto = getattr(stream, "readinto", None)
        self.limits = limits or Limits()

    def _read_exact(self, n: int, what: str) -> bytes:
        first = self._stream.read(n)
        if len(first) == n:  # the common case: one read does it
            return first
        chunks = [first] if first else []
        remaining = n - len(first)
        if not first:
            raise ProtocolError(f"stream truncated while reading {what}: got 0 of {n} bytes")
        while remaining > 0:
            chunk = self._stream.read(remaining)
            if not chunk:
                raise ProtocolError(f"stream truncated while reading {what}: "
                                    f"got {n - remaining} of {n} bytes")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _fill(self, array: np.ndarray, what: str) -> np.ndarray:
        """Read ``array.nbytes`` bytes from the stream into ``array`` (C-contiguous); return it."""
        n = array.nbytes
        if n == 0:
            return array
        if self._readinto is None:   # a stream with read() only
            array.reshape(-1).view(np.uint8)[:] = np.frombuffer(self._read_exact(n, what), np.uint8)
            return array
        view = memoryview(array.reshape(-1).view(np.uint8))
        got = 0
        while got < n:
            k = self._readinto(view[got:] if got else view)
            if not k:
                raise ProtocolError(f"stream truncated while reading {what}: got {got} of {n} bytes")
            got += k
        return array

    def _length(self, fmt: str, what: str) -> int:
        size = struct.calcsize(fmt)
        (n,) = struct.unpack(fmt, self._read_exact(size, f"{what} length"))
        if n > self.limits.max_text_bytes:
            raise ProtocolError(f"{what} length {n} bytes exceeds the limit of "
                                f"{self.limits.max_text_bytes} bytes")
        return n

    def _string(self, fmt: str, what: str) -> str:
        raw = self._read_exact(self._length(fmt, what), what)
        return raw.rstrip(b"\x00").decode("utf-8", errors="replace")

    def read(self) -> Message | None:
        """Read the next message.

        Returns
        -------
        The decoded message, or ``None`` when the stream ends cleanly at a message boundary
        (the peer closed the connection without CLOSE).

        Raises
        ------
        ProtocolError
            Unknown id, truncated payload, or a length over :attr:`limits`.
        """
        first = self._stream.read(2)
        if len(first) != 2:
            if not first:
                return None
            first += self._read_exact(1, "message id")
        mid = first[0] | first[1] << 8
        decode = _DECODERS.get(mid)
        if decode is None:
            raise ProtocolError(f"unknown message id {mid}; this server understands "
                                f"{', '.join(f'{m.value} ({m.name})' for m in MessageId)}")
        return decode(self)

    def _config_text(self) -> ConfigText:
        return ConfigText(self._string("<I", "CONFIG_TEXT"))

    def _close(self) -> Close:
        return Close()

    def _text(self) -> Text:
        return Text(self._string("<I", "TEXT"))

    def _error(self) -> Error:
        return Error(self._string("<Q", "ERROR"))

    def _config_file(self) -> ConfigFile:
        raw = self._read_exact(CONFIG_FILE_BYTES, "CONFIG_FILE name")
        return ConfigFile(raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace"))

    def _header(self) -> Header:
        raw = self._read_exact(self._length("<I", "HEADER"), "HEADER")
        return Header(raw.rstrip(b"\x00"))

    def _query(self) -> Query:
        reserved, corr = struct.unpack("<QQ", self._read_exact(16, "QUERY fields"))
        return Query(reserved, corr, self._string("<Q", "QUERY"))

    def _response(self) -> Response:
        (corr,) = struct.unpack("<Q", self._read_exact(8, "RESPONSE correlation id"))
        return Response(corr, self._string("<Q", "RESPONSE"))

    def _acquisition(self) -> ismrmrd.Acquisition:
        h = ismrmrd.AcquisitionHeader.from_buffer_copy(self._read_exact(ACQ_HEADER_BYTES, "ACQUISITION header"))
        lim = self.limits
        samples, channels, dims = h.number_of_samples, h.active_channels, h.trajectory_dimensions
        if samples > lim.max_samples:
            raise ProtocolError(f"ACQUISITION number_of_samples {samples} exceeds "
                                f"the limit of {lim.max_samples}")
        if channels > lim.max_channels:
            raise ProtocolError(f"ACQUISITION active_channels {channels} exceeds the "
                                f"limit of {lim.max_channels}")
        if dims > lim.max_trajectory_dims:
            raise ProtocolError(f"ACQUISITION trajectory_dimensions {dims} "
                                f"exceeds the limit of {lim.max_trajectory_dims}")
        what = f"ACQUISITION scan_counter={h.scan_counter} data"
        traj = self._fill(np.empty((samples, dims), np.float32), what)
        data = self._fill(np.empty((channels, samples), np.complex64), what)
        return ismrmrd.Acquisition(h, data, traj)   # the header and arrays as they are, no copy

    def _image(self) -> ismrmrd.Image:
        head = self._read_exact(IMAGE_HEADER_BYTES, "IMAGE header")
        h = ismrmrd.ImageHeader.from_buffer_copy(head)
        try:
            dtype = np.dtype(get_dtype_from_data_type(h.data_type))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"IMAGE data_type {h.data_type} is not an ISMRMRD data type") from exc
        x, y, z = (int(m) for m in h.matrix_size)
        elements = x * y * z * int(h.channels)
        if elements > self.limits.max_image_elements:
            raise ProtocolError(f"IMAGE matrix_size {tuple(h.matrix_size)} x channels {h.channels} "
                                f"exceeds the limit of {self.limits.max_image_elements} elements")
        attr = self._read_exact(self._length("<Q", "IMAGE attribute string"), "IMAGE attribute string")
        data = self._fill(np.empty((int(h.channels), z, y, x), dtype), "IMAGE data")
        # as ismrmrd's Image.deserialize_from_with_header decodes the attribute string (strict UTF-8)
        return ismrmrd.Image(head, attr.rstrip(b"\x00").decode("utf-8"), data=data)

    def _waveform(self) -> ismrmrd.Waveform:
        head = self._read_exact(WAVEFORM_HEADER_BYTES, "WAVEFORM header")
        h = ismrmrd.WaveformHeader.from_buffer_copy(head)
        elements = int(h.channels) * int(h.number_of_samples)
        if elements > self.limits.max_waveform_elements:
            raise ProtocolError(f"WAVEFORM channels {h.channels} x number_of_samples "
                                f"{h.number_of_samples} exceeds the limit of "
                                f"{self.limits.max_waveform_elements} elements")
        data = self._read_exact(elements * 4, "WAVEFORM data")
        return ismrmrd.Waveform.deserialize_from(io.BytesIO(head + data).read)


#: message id → the reader's method that decodes its payload (class level: no reference cycle)
_DECODERS = {MessageId.ACQUISITION.value: MessageReader._acquisition, MessageId.IMAGE.value: MessageReader._image,
             MessageId.WAVEFORM.value: MessageReader._waveform, MessageId.CONFIG_FILE.value: MessageReader._config_file,
             MessageId.CONFIG_TEXT.value: MessageReader._config_text, MessageId.HEADER.value: MessageReader._header,
             MessageId.CLOSE.value: MessageReader._close, MessageId.TEXT.value: MessageReader._text,
             MessageId.QUERY.value: MessageReader._query, MessageId.RESPONSE.value: MessageReader._response,
             MessageId.ERROR.value: MessageReader._error}


def _bytes_of(array: np.ndarray) -> memoryview:
    """The bytes of ``array`` in C order, without a copy when it is already contiguous."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


_ATTRIBUTE_LEN_AT = ismrmrd.ImageHeader.attribute_string_len.offset


def encode_parts(msg: Message) -> list[bytes | memoryview]:
    """One message as the buffers that follow each other on the wire.

    Small fields are packed into one ``bytes``; the samples of acquisitions and the pixels of
    images are views of the items' own arrays (no copy), so a writer can hand the list to
    ``sendmsg`` (:class:`cmrecon.server.tcp.SocketStream`) or write it piece by piece.
    """
    if isinstance(msg, ismrmrd.Acquisition):
        return [_ID[MessageId.ACQUISITION] + bytes(msg._head), _bytes_of(msg.traj), _bytes_of(msg.data)]
    if isinstance(msg, ismrmrd.Image):
        attr = msg.attribute_string.encode("utf-8")
        head = bytearray(msg._head)   # the header as ismrmrd writes it: attribute length filled in
        struct.pack_into("<I", head, _ATTRIBUTE_LEN_AT, len(attr) & 0xFFFFFFFF)
        return [b"".join((_ID[MessageId.IMAGE], head, struct.pack("<Q", len(attr)), attr)), _bytes_of(msg.data)]
    if isinstance(msg, ismrmrd.Waveform):
        buf = io.BytesIO()
        buf.write(_ID[MessageId.WAVEFORM])
        msg.serialize_into(buf.write)
        return [buf.getvalue()]
    if isinstance(msg, ConfigFile):
        raw = msg.name.encode("utf-8")
        if len(raw) >= CONFIG_FILE_BYTES:
            raise ProtocolError(f"CONFIG_FILE name is {len(raw)} bytes; at most "
                                f"{CONFIG_FILE_BYTES - 1} fit")
        return [_ID[MessageId.CONFIG_FILE] + raw.ljust(CONFIG_FILE_BYTES, b"\x00")]
    if isinstance(msg, ConfigText):
        return [_ID[MessageId.CONFIG_TEXT] + _string("<I", msg.text)]
    if isinstance(msg, Header):
        return [_ID[MessageId.HEADER] + _string("<I", msg.xml)]
    if isinstance(msg, Close):
        return [_ID[MessageId.CLOSE]]
    if isinstance(msg, Text):
        return [_ID[MessageId.TEXT] + _string("<I", msg.text)]
    if isinstance(msg, Query):
        return [_ID[MessageId.QUERY] + struct.pack("<QQ", msg.reserved, msg.correlation_id)
                + _string("<Q", msg.text)]
    if isinstance(msg, Response):
        return [_ID[MessageId.RESPONSE] + struct.pack("<Q", msg.correlation_id) + _string("<Q", msg.text)]
    if isinstance(msg, Error):
        return [_ID[MessageId.ERROR] + _string("<Q", msg.text)]
    raise TypeError(f"cannot encode {type(msg).__name__} as a stream message")


_ID = {m: struct.pack("<H", m.value) for m in MessageId}


def _string(fmt: str, text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack(fmt, len(raw)) + raw


class MessageWriter:
    """Encode protocol messages onto a binary stream (flush with :meth:`flush`).

    A stream with ``writev(buffers)`` (:class:`cmrecon.server.tcp.SocketStream`) gets each
    message as one gathered write; any other gets the buffers one ``write`` at a time.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._writev = getattr(stream, "writev", None)

    def write(self, msg: Message) -> None:
        """Write one message (any of the types :meth:`MessageReader.read` returns)."""
        parts = encode_parts(msg)
        if self._writev is not None:
            self._writev(parts)
        else:
            for part in parts:
                self._stream.write(part)

    def flush(self) -> None:
        self._stream.flush()


def encode(msg: Message) -> bytes:
    """The bytes of one message on the wire (:meth:`MessageWriter.write` into memory)."""
    return b"".join(encode_parts(msg))
