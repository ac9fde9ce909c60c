"""Stream framing: every message type round-trips; bad input is a ProtocolError, never a hang."""

from __future__ import annotations

import io
import struct

import ismrmrd
import numpy as np
import pytest

from cmrecon.errors import ProtocolError
from cmrecon.io import protocol as P


def _roundtrip(msgs):
    buf = io.BytesIO()
    w = P.MessageWriter(buf)
    for m in msgs:
        w.write(m)
    buf.seek(0)
    r = P.MessageReader(buf)
    out = []
    while (m := r.read()) is not None:
        out.append(m)
    return buf.getvalue(), out


def test_every_message_type_round_trips_bit_exactly():
    rng = np.random.default_rng(1)
    acq = ismrmrd.Acquisition.from_array((rng.normal(size=(3, 20)) + 1j * rng.normal(size=(3, 20))).astype(np.complex64))
    acq.idx.slice = 2
    acq.resize(number_of_samples=20, active_channels=3, trajectory_dimensions=2)
    acq.traj[:] = rng.normal(size=(20, 2)).astype(np.float32)
    img = ismrmrd.Image.from_array(rng.normal(size=(5, 7)).astype(np.float32))
    img.attribute_string = "<ismrmrdMeta><meta><name>DataRole</name><value>PSIR</value></meta></ismrmrdMeta>"
    wav = ismrmrd.Waveform.from_array(np.arange(12, dtype=np.uint32).reshape(3, 4))
    msgs = [P.ConfigFile("fft_rss.xml"), P.ConfigText("<configuration/>"), P.Header(b"<ismrmrdHeader/>"),
            acq, img, wav, P.Text("hello"), P.Query(0, 42, "gadgetron::version"),
            P.Response(42, "cmrecon"), P.Error("boom"), P.Close()]
    raw, out = _roundtrip(msgs)
    assert [type(m) for m in out] == [type(m) for m in msgs]
    for sent, got in zip(msgs, out):
        if isinstance(sent, (ismrmrd.Acquisition, ismrmrd.Image, ismrmrd.Waveform)):
            assert bytes(got.getHead()) == bytes(_as_ismrmrd_writes_it(sent).getHead())
            np.testing.assert_array_equal(got.data, sent.data)
        else:
            assert got == sent
    np.testing.assert_array_equal(out[3].traj, acq.traj)
    assert out[4].attribute_string == img.attribute_string
    # byte layout facts (docs/protocol.md): CONFIG_FILE is id + 1024 bytes; QUERY has two u64 then u64 length
    assert raw[:2] == struct.pack("<H", 1) and raw[2:13] == b"fft_rss.xml" and len(raw[2:1026]) == 1024


def _as_ismrmrd_writes_it(item):
    """``item`` after the ``ismrmrd`` package's own serializer (it fills an image's attribute length)."""
    buf = io.BytesIO()
    item.serialize_into(buf.write)
    return type(item).from_bytes(buf.getvalue())


def test_mrd_items_encode_to_the_bytes_ismrmrd_writes_and_the_sender_is_not_changed():
    rng = np.random.default_rng(2)
    acq = ismrmrd.Acquisition.from_array((rng.normal(size=(4, 16)) + 1j * rng.normal(size=(4, 16))).astype(np.complex64),
                                         rng.normal(size=(16, 3)).astype(np.float32))
    acq.idx.kspace_encode_step_1, acq.scan_counter = 7, 99
    img = ismrmrd.Image.from_array((rng.normal(size=(2, 3, 5, 6)) + 1j).astype(np.complex64))
    img.attribute_string = "<ismrmrdMeta><meta><name>WindowCenter</name><value>4096</value></meta></ismrmrdMeta>"
    transposed = ismrmrd.Image(data=np.asfortranarray(rng.normal(size=(1, 1, 6, 5)).astype(np.float32)))
    wav = ismrmrd.Waveform.from_array(np.arange(12, dtype=np.uint32).reshape(3, 4))
    for item, mid in ((acq, 1008), (img, 1022), (transposed, 1022), (wav, 1026)):
        head_before = bytes(item.getHead())
        ours = P.encode(item)
        assert bytes(item.getHead()) == head_before   # encoding changes nothing of the item
        buf = io.BytesIO()
        item.serialize_into(buf.write)
        assert ours == struct.pack("<H", mid) + buf.getvalue()
        if not isinstance(item, ismrmrd.Image):
            continue
        got = P.MessageReader(io.BytesIO(ours)).read()
        assert got.data.flags.c_contiguous and got.data.tobytes() == np.ascontiguousarray(item.data).tobytes()


def test_header_trailing_nul_is_stripped():
    buf = io.BytesIO(struct.pack("<HI", 3, 6) + b"<a/>\x00\x00")
    assert P.MessageReader(buf).read() == P.Header(b"<a/>")


@pytest.mark.parametrize("raw, match", [
    (struct.pack("<H", 999), "unknown message id 999"),
    (struct.pack("<HI", 5, 10) + b"abc", "truncated while reading TEXT"),
    (struct.pack("<HI", 5, 2**31), "exceeds the limit"),
    (struct.pack("<H", 1) + b"x" * 10, "truncated while reading CONFIG_FILE"),
    (b"\x05", "truncated while reading message id"),
])
def test_malformed_streams_raise_named_errors(raw, match):
    with pytest.raises(ProtocolError, match=match):
        P.MessageReader(io.BytesIO(raw)).read()


def test_absurd_acquisition_sizes_are_refused_before_allocation():
    head = ismrmrd.AcquisitionHeader()
    head.number_of_samples = 60000
    head.active_channels = 4
    raw = struct.pack("<H", 1008) + bytes(head)
    with pytest.raises(ProtocolError, match="number_of_samples 60000 exceeds"):
        P.MessageReader(io.BytesIO(raw)).read()
    head.number_of_samples = 16
    head.active_channels = 4000
    with pytest.raises(ProtocolError, match="active_channels 4000 exceeds"):
        P.MessageReader(io.BytesIO(struct.pack("<H", 1008) + bytes(head))).read()


def test_absurd_image_size_is_refused():
    img = ismrmrd.Image.from_array(np.zeros((4, 4), np.float32))
    head = img.getHead()
    head.matrix_size[:] = (65535, 65535, 1)
    head.channels = 16
    with pytest.raises(ProtocolError, match="IMAGE matrix_size"):
        P.MessageReader(io.BytesIO(struct.pack("<H", 1022) + bytes(head))).read()


def test_clean_eof_between_messages_is_none():
    assert P.MessageReader(io.BytesIO(b"")).read() is None


class _ReadOnly:
    """A stream with ``read`` and no ``readinto`` that hands out at most 5 bytes per call."""

    def __init__(self, raw: bytes) -> None:
        self._buf = io.BytesIO(raw)

    def read(self, n: int) -> bytes:
        return self._buf.read(min(n, 5))


class _Short(io.RawIOBase):
    """A raw stream whose ``readinto`` fills at most 5 bytes per call (a socket's short reads)."""

    def __init__(self, raw: bytes) -> None:
        self._buf = io.BytesIO(raw)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._buf.readinto(memoryview(b)[:5])


def test_payloads_decode_the_same_from_short_reads_and_without_readinto():
    acq = ismrmrd.Acquisition.from_array(np.arange(24, dtype=np.float32).view(np.complex64).reshape(3, 4))
    acq.scan_counter = 5
    img = ismrmrd.Image.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    raw = P.encode(acq) + P.encode(img)
    for stream in (io.BytesIO(raw), _ReadOnly(raw), _Short(raw), io.BufferedReader(_Short(raw), 7)):
        r = P.MessageReader(stream)
        got_acq, got_img = r.read(), r.read()
        assert P.encode(got_acq) == P.encode(acq) and P.encode(got_img) == P.encode(img)
        assert r.read() is None
    with pytest.raises(ProtocolError, match=r"truncated while reading ACQUISITION scan_counter=5 data: got 20 of 96"):
        P.MessageReader(io.BytesIO(P.encode(acq)[:-76])).read()
