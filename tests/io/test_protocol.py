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
            assert bytes(got.getHead()) == bytes(sent.getHead())
            np.testing.assert_array_equal(got.data, sent.data)
        else:
            assert got == sent
    np.testing.assert_array_equal(out[3].traj, acq.traj)
    assert out[4].attribute_string == img.attribute_string
    # byte layout facts (docs/protocol.md): CONFIG_FILE is id + 1024 bytes; QUERY has two u64 then u64 length
    assert raw[:2] == struct.pack("<H", 1) and raw[2:13] == b"fft_rss.xml" and len(raw[2:1026]) == 1024


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
