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

    Parameters
    ----------
    stream : binary file object with ``read(n)`` (``socket.makefile('rb')`` or a file).
    limits : bounds on lengths; a message over them raises :class:`ProtocolError`.
    """

    def __init__(self, stream: BinaryIO, limits: Limits | None = None) -> None:
        self._stream = stream
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
        if not first:
            return None
        if len(first) == 1:
            first += self._read_exact(1, "message id")
        (mid,) = struct.unpack("<H", first)
        if mid == MessageId.CONFIG_FILE:
            raw = self._read_exact(CONFIG_FILE_BYTES, "CONFIG_FILE name")
            return ConfigFile(raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace"))
        if mid == MessageId.CONFIG_TEXT:
            return ConfigText(self._string("<I", "CONFIG_TEXT"))
        if mid == MessageId.HEADER:
            raw = self._read_exact(self._length("<I", "HEADER"), "HEADER")
            return Header(raw.rstrip(b"\x00"))
        if mid == MessageId.CLOSE:
            return Close()
        if mid == MessageId.TEXT:
            return Text(self._string("<I", "TEXT"))
        if mid == MessageId.QUERY:
            reserved, corr = struct.unpack("<QQ", self._read_exact(16, "QUERY fields"))
            return Query(reserved, corr, self._string("<Q", "QUERY"))
        if mid == MessageId.RESPONSE:
            (corr,) = struct.unpack("<Q", self._read_exact(8, "RESPONSE correlation id"))
            return Response(corr, self._string("<Q", "RESPONSE"))
        if mid == MessageId.ERROR:
            return Error(self._string("<Q", "ERROR"))
        if mid == MessageId.ACQUISITION:
            return self._acquisition()
        if mid == MessageId.IMAGE:
            return self._image()
        if mid == MessageId.WAVEFORM:
            return self._waveform()
        raise ProtocolError(f"unknown message id {mid}; this server understands "
                            f"{', '.join(f'{m.value} ({m.name})' for m in MessageId)}")

    def _acquisition(self) -> ismrmrd.Acquisition:
        head = self._read_exact(ACQ_HEADER_BYTES, "ACQUISITION header")
        h = ismrmrd.AcquisitionHeader.from_buffer_copy(head)
        lim = self.limits
        if h.number_of_samples > lim.max_samples:
            raise ProtocolError(f"ACQUISITION number_of_samples {h.number_of_samples} exceeds "
                                f"the limit of {lim.max_samples}")
        if h.active_channels > lim.max_channels:
            raise ProtocolError(f"ACQUISITION active_channels {h.active_channels} exceeds the "
                                f"limit of {lim.max_channels}")
        if h.trajectory_dimensions > lim.max_trajectory_dims:
            raise ProtocolError(f"ACQUISITION trajectory_dimensions {h.trajectory_dimensions} "
                                f"exceeds the limit of {lim.max_trajectory_dims}")
        what = f"ACQUISITION scan_counter={h.scan_counter} data"
        pending = [head]

        def read(k: int) -> bytes:  # the header we already hold, then straight from the stream
            return pending.pop() if pending else self._read_exact(k, what)

        return ismrmrd.Acquisition.deserialize_from(read)

    def _image(self) -> ismrmrd.Image:
        head = self._read_exact(IMAGE_HEADER_BYTES, "IMAGE header")
        h = ismrmrd.ImageHeader.from_buffer_copy(head)
        try:
            dtype = np.dtype(get_dtype_from_data_type(h.data_type))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"IMAGE data_type {h.data_type} is not an ISMRMRD data type") from exc
        elements = int(np.prod([int(m) for m in h.matrix_size], dtype=np.int64)) * int(h.channels)
        if elements > self.limits.max_image_elements:
            raise ProtocolError(f"IMAGE matrix_size {tuple(h.matrix_size)} x channels {h.channels} "
                                f"exceeds the limit of {self.limits.max_image_elements} elements")
        n_attr = self._length("<Q", "IMAGE attribute string")
        attr = self._read_exact(n_attr, "IMAGE attribute string")
        data = self._read_exact(elements * dtype.itemsize, "IMAGE data")
        rest = io.BytesIO(struct.pack("<Q", n_attr) + attr + data)
        return ismrmrd.Image.deserialize_from_with_header(head, rest.read)

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


class MessageWriter:
    """Encode protocol messages onto a binary stream (flush with :meth:`flush`)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def _id(self, mid: MessageId) -> None:
        self._stream.write(struct.pack("<H", int(mid)))

    def _string(self, fmt: str, text: str | bytes) -> None:
        raw = text.encode("utf-8") if isinstance(text, str) else text
        self._stream.write(struct.pack(fmt, len(raw)))
        self._stream.write(raw)

    def write(self, msg: Message) -> None:
        """Write one message (any of the types :meth:`MessageReader.read` returns)."""
        if isinstance(msg, ismrmrd.Acquisition):
            self._id(MessageId.ACQUISITION)
            msg.serialize_into(self._stream.write)
        elif isinstance(msg, ismrmrd.Image):
            self._id(MessageId.IMAGE)
            msg.serialize_into(self._stream.write)
        elif isinstance(msg, ismrmrd.Waveform):
            self._id(MessageId.WAVEFORM)
            msg.serialize_into(self._stream.write)
        elif isinstance(msg, ConfigFile):
            raw = msg.name.encode("utf-8")
            if len(raw) >= CONFIG_FILE_BYTES:
                raise ProtocolError(f"CONFIG_FILE name is {len(raw)} bytes; at most "
                                    f"{CONFIG_FILE_BYTES - 1} fit")
            self._id(MessageId.CONFIG_FILE)
            self._stream.write(raw.ljust(CONFIG_FILE_BYTES, b"\x00"))
        elif isinstance(msg, ConfigText):
            self._id(MessageId.CONFIG_TEXT)
            self._string("<I", msg.text)
        elif isinstance(msg, Header):
            self._id(MessageId.HEADER)
            self._string("<I", msg.xml)
        elif isinstance(msg, Close):
            self._id(MessageId.CLOSE)
        elif isinstance(msg, Text):
            self._id(MessageId.TEXT)
            self._string("<I", msg.text)
        elif isinstance(msg, Query):
            self._id(MessageId.QUERY)
            self._stream.write(struct.pack("<QQ", msg.reserved, msg.correlation_id))
            self._string("<Q", msg.text)
        elif isinstance(msg, Response):
            self._id(MessageId.RESPONSE)
            self._stream.write(struct.pack("<Q", msg.correlation_id))
            self._string("<Q", msg.text)
        elif isinstance(msg, Error):
            self._id(MessageId.ERROR)
            self._string("<Q", msg.text)
        else:
            raise TypeError(f"cannot encode {type(msg).__name__} as a stream message")

    def flush(self) -> None:
        self._stream.flush()


def encode(msg: Message) -> bytes:
    """The bytes of one message on the wire (:meth:`MessageWriter.write` into memory)."""
    buf = io.BytesIO()
    MessageWriter(buf).write(msg)
    return buf.getvalue()
