"""The TCP server on loopback: round trips, truth, concurrency, and every bad-input case."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading

import h5py
import ismrmrd
import numpy as np
import pytest

from cmrecon.chain.definition import list_chains
from cmrecon.io import protocol as P
from cmrecon.io.mrdfile import iter_items, read_header_xml, write_dataset
from cmrecon.server.client import ReplayError, replay_in_process, replay_remote

from mrd_cases import write_case


def _talk(port: int, payload: bytes, read: bool = True) -> tuple[list[str], list[object], bool]:
    """Send raw bytes; return (texts, other messages, whether CLOSE arrived)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        if not read:
            return [], [], False
        reader = P.MessageReader(s.makefile("rb"))
        texts, other = [], []
        while True:
            msg = reader.read()
            if msg is None:
                return texts, other, False
            if isinstance(msg, P.Close):
                return texts, other, True
            if isinstance(msg, P.Text):
                texts.append(msg.text)
            else:
                other.append(msg)


def _frame(*msgs) -> bytes:
    import io
    buf = io.BytesIO()
    w = P.MessageWriter(buf)
    for m in msgs:
        w.write(m)
    return buf.getvalue()


def _images_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert bytes(x.getHead()) == bytes(y.getHead())
        assert x.attribute_string == y.attribute_string
        assert x.data.tobytes() == y.data.tobytes()


def _assert_server_still_works(server, case):
    path, c = case
    result = replay_remote(path, port=server.port, chain_name="fft_rss")
    assert len(result.images) == c.truth_rss.shape[0]


def test_server_and_in_process_give_byte_identical_images(server, case):
    path, _ = case
    remote = replay_remote(path, port=server.port, chain_name="fft_rss")
    local = replay_in_process(path, "fft_rss")
    assert remote.sent == local.sent > 0
    _images_equal(remote.images, local.images)


def test_fft_rss_matches_truth_within_noise_and_covariance_error(server, case):
    path, c = case
    images = replay_remote(path, port=server.port, chain_name="fft_rss.xml").images
    assert [im.slice for im in images] == [0, 1]
    for im in images:
        got = im.data[0, 0].astype(np.float64)
        truth = c.truth_rss[im.slice]
        # The whitening matrix comes from N noise samples per coil: its relative error is
        # O(1/sqrt(N)); white noise of unit variance adds at most ||n|| (|RSS(x+n)-RSS(x)| <= |n|).
        tol = 3.0 / np.sqrt(c.noise_samples) + 3.0 * np.sqrt(got.size * 4) / np.linalg.norm(truth)
        nrmse = np.linalg.norm(got - truth) / np.linalg.norm(truth)
        assert nrmse < tol, (nrmse, tol)
        assert tuple(im.matrix_size) == (32, 32, 1)
        assert tuple(round(v) for v in im.field_of_view) == (300, 300, 8)
        assert tuple(im.position) == (0.0, 0.0, 8.0 * im.slice)
        assert im.image_series_index == 1 and im.image_type == ismrmrd.IMTYPE_MAGNITUDE


@pytest.mark.skipif(shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None,
                    reason="Debian's ismrmrd-tools not installed (.ci/run installs it)")
def test_fft_rss_on_ismrmrd_shepp_logan(server, tmp_path):
    path = tmp_path / "sl.h5"
    sigma = 0.01  # the generator's -n: std of real and of imaginary part of k-space noise
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(path), "-m", "64", "-c", "4",
                    "-n", str(sigma), "-r", "1", "-C"], check=True, capture_output=True)
    images = replay_remote(path, port=server.port, chain_name="fft_rss").images
    with h5py.File(path) as f:
        ci = f["dataset/coil_images"][0]
    ci = ci["real"] + 1j * ci["imag"]  # (coils, y, 2x) noise-free, oversampled
    truth = np.sqrt((np.abs(ci[:, :, 32:96]) ** 2).sum(0)) / (sigma * np.sqrt(2))  # SNR units
    got = images[0].data[0, 0]
    nrmse = np.linalg.norm(got - truth) / np.linalg.norm(truth)
    # one 128-sample noise readout: whitening error ~ 3/sqrt(128) = 0.27 at 3 sigma of the estimate;
    # plus per-pixel noise of unit variance in 4 coils
    tol = 3 / np.sqrt(128) + np.sqrt(4 * got.size) / np.linalg.norm(truth)
    assert nrmse < tol, (nrmse, tol)


def test_four_concurrent_clients_each_get_their_own_images(server, tmp_path):
    cases = [(tmp_path / f"c{i}.h5", write_case(tmp_path / f"c{i}.h5", seed=10 + i, slices=1 + i % 2))
             for i in range(4)]
    expected = [replay_in_process(p, "fft_rss").images for p, _ in cases]
    results: dict[int, object] = {}

    def run(i):
        try:
            results[i] = replay_remote(cases[i][0], port=server.port, chain_name="fft_rss").images
        except Exception as exc:  # surfaced below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(4):
        assert not isinstance(results[i], Exception), results[i]
        _images_equal(results[i], expected[i])


def test_passthrough_returns_everything_including_images(server, case, tmp_path):
    path, _ = case
    items = list(iter_items(path))
    n_items = len(items)
    got = replay_remote(path, port=server.port, chain_name="passthrough")
    assert len(got.other) == n_items
    img = ismrmrd.Image.from_array(np.ones((4, 4), np.float32))
    texts, other, closed = _talk(server.port, _frame(P.ConfigFile("passthrough"), P.Header(read_header_xml(path)),
                                                     img, P.Close()))
    assert closed and texts == [] and other[0].data.tobytes() == img.data.tobytes()


def test_query_is_answered_before_and_during_the_stream(server, case):
    path, _ = case
    texts, other, closed = _talk(server.port, _frame(
        P.Query(0, 7, "gadgetron::version"), P.ConfigFile("passthrough"), P.Header(read_header_xml(path)),
        P.Query(0, 8, "cmrecon::chains"), P.Close()))
    responses = {m.correlation_id: m.text for m in other if isinstance(m, P.Response)}
    assert responses[7].startswith("cmrecon ") and "fft_rss" in responses[8].split("\n") and closed


# --- bad input: each case gets a clear error, the connection closes, the server keeps serving ---

def _header_bytes(case):
    return read_header_xml(case[0])


def _first_acq(case):
    return next(a for a in iter_items(case[0]) if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT))


BAD = {
    "unknown chain": (lambda c: _frame(P.ConfigFile("no_such_chain"), P.Header(b"<x/>"), P.Close()),
                      "unknown chain 'no_such_chain'; known chains: " + ", ".join(list_chains())),
    "unknown message id": (lambda c: _frame(P.ConfigFile("fft_rss"), P.Header(_header_bytes(c))) + struct.pack("<H", 4242),
                           "unknown message id 4242"),
    "absurd length": (lambda c: _frame(P.ConfigFile("fft_rss")) + struct.pack("<HI", 3, 2**31 + 5),
                      "HEADER length 2147483653 bytes exceeds the limit"),
    "data before header": (lambda c: _frame(P.ConfigFile("fft_rss"), _first_acq(c), P.Close()),
                           "expected HEADER (3) after the config, got Acquisition"),
    "header without encoding": (lambda c: _frame(P.ConfigFile("fft_rss"), P.Header(
        b"<ismrmrdHeader xmlns=\"http://www.ismrm.org/ISMRMRD\"><experimentalConditions>"
        b"<H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions>"
        b"</ismrmrdHeader>"), _first_acq(c), P.Close()),
                                "step 'remove_oversampling' failed: StepError: the ISMRMRD header has no <encoding>"),
    "unparseable header": (lambda c: _frame(P.ConfigFile("fft_rss"), P.Header(b"<not xml"), _first_acq(c), P.Close()),
                           "the ISMRMRD XML header cannot be parsed"),
    "inline XML importing os": (lambda c: _frame(P.ConfigText(
        '<configuration><version>2</version><stream><external><execute name="os" target="system" '
        'type="python"/></external></stream></configuration>'), P.Close()),
                                "module 'os' is not allowed"),
    "garbage config": (lambda c: b"\xff\xff" + b"\x00" * 64, "unknown message id 65535"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_gets_an_error_and_the_server_keeps_serving(server, case, name):
    build, expected = BAD[name]
    texts, _, closed = _talk(server.port, build(case))
    assert closed, "the server must close the session with CLOSE after an error"
    assert any(t.startswith("ERR") and expected in t for t in texts), texts
    _assert_server_still_works(server, case)


def test_truncated_message_then_disconnect(server, case):
    raw = _frame(P.ConfigFile("fft_rss"), P.Header(_header_bytes(case)))
    acq = _frame(_first_acq(case))
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(raw + acq[: len(acq) // 2])
        s.shutdown(socket.SHUT_WR)
        reader = P.MessageReader(s.makefile("rb"))
        msgs = []
        while (m := reader.read()) is not None and not isinstance(m, P.Close):
            msgs.append(m)
    assert any(isinstance(m, P.Text) and "truncated while reading ACQUISITION" in m.text for m in msgs), msgs
    _assert_server_still_works(server, case)


def test_client_vanishing_mid_stream_does_not_disturb_others(server, case):
    path, _ = case
    raw = _frame(P.ConfigFile("fft_rss"), P.Header(_header_bytes(case)))
    acqs = [a for a in iter_items(path)][:20]
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(raw + _frame(*acqs))
    s.close()  # gone without CLOSE
    _assert_server_still_works(server, case)


def test_exception_inside_a_step_reaches_the_client(server, case, tmp_path):
    """Readouts with a different coil count than the noise scan: the step's error, not a wrong image."""
    path, c = case
    items = list(iter_items(path))
    bad = next(i for i, a in enumerate(items) if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT))
    a = items[bad]
    odd = ismrmrd.Acquisition.from_array(np.zeros((3, a.number_of_samples), np.complex64))
    odd.idx.kspace_encode_step_1 = 5
    items[bad + 5] = odd
    bad_path = tmp_path / "bad.h5"
    write_dataset(bad_path, c.header_xml, items)
    with pytest.raises(ReplayError, match="step 'noise_prewhiten' failed: .*3 channels, the noise scan had 4"):
        replay_remote(bad_path, port=server.port, chain_name="fft_rss")
    with pytest.raises(ReplayError, match="3 channels, the noise scan had 4"):
        replay_in_process(bad_path, "fft_rss")
    _assert_server_still_works(server, case)


def test_busy_server_refuses_clearly(case):
    from cmrecon.server.tcp import MrdServer
    srv = MrdServer("127.0.0.1", 0, max_connections=1, idle_timeout_s=5)
    srv.start_background()
    try:
        hold = socket.create_connection(("127.0.0.1", srv.port))
        hold.sendall(_frame(P.ConfigFile("passthrough")))
        import time
        time.sleep(0.3)
        texts, _, closed = _talk(srv.port, _frame(P.ConfigFile("passthrough"), P.Close()))
        assert closed and any("server busy" in t for t in texts)
        hold.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_images_stream_back_before_the_client_finishes_sending(server, case):
    """Slice 0's image arrives while slice 1's readouts have not been sent yet."""
    path, _ = case
    items = list(iter_items(path))
    last0 = next(i for i, a in enumerate(items) if a.idx.slice == 0 and a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(_frame(P.ConfigFile("fft_rss"), P.Header(read_header_xml(path)), *items[: last0 + 1]))
        reader = P.MessageReader(s.makefile("rb"))
        first = reader.read()
        assert isinstance(first, ismrmrd.Image) and first.slice == 0
        s.sendall(_frame(*items[last0 + 1:], P.Close()))
        second = reader.read()
        assert isinstance(second, ismrmrd.Image) and second.slice == 1
        assert isinstance(reader.read(), P.Close)


def test_a_refused_chain_stops_the_client_sending_the_rest_of_the_file(server, case, monkeypatch):
    """replay_remote reads replies while it sends: after ERR it does not stream the whole file."""
    import cmrecon.server.client as client
    items = list(iter_items(case[0]))
    total = 200 * len(items)
    sent = []

    def many(path, group, progress):   # a long stream: the file's readouts 200 times over
        for _ in range(200):
            for item in items:
                sent.append(1)
                yield item
    monkeypatch.setattr(client, "_source", many)
    with pytest.raises(ReplayError, match="unknown chain 'no_such_chain'"):
        replay_remote(case[0], port=server.port, chain_name="no_such_chain")
    assert len(sent) < total // 2, (len(sent), total)
