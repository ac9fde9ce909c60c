"""The read-ahead thread: bounded memory, back-pressure, errors in stream order, a stop that
wakes a read waiting for the client, and QUERY answered while the chain computes.
"""

from __future__ import annotations

import socket
import threading
import time

import ismrmrd
import numpy as np
import pytest

from cmrecon.chain import registry
from cmrecon.chain.registry import NoParams, StepSpec
from cmrecon.errors import ProtocolError
from cmrecon.io import protocol as P
from cmrecon.server.session import ReadAhead
from cmrecon.server.tcp import SocketStream, StreamStopped

READOUT_BYTES = 4 * 64 * 8   # 4 channels x 64 samples complex64


class _Source:
    """A reader of ``n`` readouts (then CLOSE, or ``then`` raised), counting what was read."""

    def __init__(self, n: int, then: BaseException | None = None) -> None:
        self.n, self.then, self.count = n, then, 0

    def read(self):
        if self.count == self.n:
            if self.then is not None:
                raise self.then
            return P.Close()
        self.count += 1
        acq = ismrmrd.Acquisition.from_array(np.zeros((4, 64), np.complex64))
        acq.scan_counter = self.count
        return acq


def _settle(source: _Source, expected: int) -> int:
    """What ``source`` has been asked for once it reached ``expected`` and the thread had time to ask for more."""
    deadline = time.monotonic() + 10
    while source.count < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    return source.count


def test_the_queue_holds_at_most_its_bytes_and_the_reader_waits_until_items_are_taken():
    source = _Source(10_000)
    ahead = ReadAhead(source, max_bytes=20 * (READOUT_BYTES + 512))
    ahead.start()
    try:
        assert _settle(source, 21) == 21   # 20 queued, one more decoded and waiting to go in
        assert ahead.peak_held <= ahead.max_bytes
        for i in range(1, 11):
            assert ahead.read().scan_counter == i
        assert _settle(source, 31) == 31
        assert ahead.peak_held <= ahead.max_bytes
    finally:
        ahead.close()


def test_items_come_in_order_then_the_readers_error_and_it_again():
    ahead = ReadAhead(_Source(5, ProtocolError("stream truncated while reading ACQUISITION")))
    ahead.start()
    try:
        assert [ahead.read().scan_counter for _ in range(5)] == [1, 2, 3, 4, 5]
        for _ in range(2):
            with pytest.raises(ProtocolError, match="truncated"):
                ahead.read()
    finally:
        ahead.close()


def test_close_then_end_is_the_end_of_the_stream():
    ahead = ReadAhead(_Source(3))
    ahead.start()
    assert [type(ahead.read()) for _ in range(4)] == [ismrmrd.Acquisition] * 3 + [P.Close]
    assert ahead.read() is None
    ahead.close()


def test_closing_wakes_a_read_that_waits_for_a_silent_client():
    a, b = socket.socketpair()
    try:
        stop = threading.Event()
        ahead = ReadAhead(P.MessageReader(SocketStream(a, idle_timeout_s=60.0, stop=stop, period_s=0.05)), stop)
        ahead.start(name="t-read")
        b.sendall(P.encode(P.Text("hello")))
        assert ahead.read() == P.Text("hello")   # ...and then the client sends nothing
        ahead.close(join_s=5.0)
        assert not [t for t in threading.enumerate() if t.name == "t-read"]
        assert ahead.read() is None
    finally:
        a.close()
        b.close()


def test_a_silent_client_times_out_and_a_stopped_stream_says_so():
    a, b = socket.socketpair()
    try:
        stream = SocketStream(a, idle_timeout_s=0.2, period_s=0.05)
        with pytest.raises(TimeoutError):
            stream.read(2)
        stop = threading.Event()
        stop.set()
        with pytest.raises(StreamStopped):
            SocketStream(a, idle_timeout_s=60.0, stop=stop).read(2)
    finally:
        a.close()
        b.close()


def test_a_large_message_is_sent_whole_to_a_client_that_reads_slowly():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    img = ismrmrd.Image.from_array(np.arange(512 * 512, dtype=np.float32).reshape(512, 512))
    got = []

    def client():
        f = b.makefile("rb")
        time.sleep(0.2)   # the server's first sends find the socket full
        got.append(P.MessageReader(f).read())
        f.close()

    t = threading.Thread(target=client)
    t.start()
    try:
        P.MessageWriter(SocketStream(a, idle_timeout_s=10.0)).write(img)
        t.join(10)
        assert got and P.encode(got[0]) == P.encode(img)
    finally:
        a.close()
        b.close()


HEADER = (b"<ismrmrdHeader xmlns='http://www.ismrm.org/ISMRMRD'><encoding><encodedSpace><matrixSize>"
          b"<x>32</x><y>32</y><z>1</z></matrixSize></encodedSpace><reconSpace><matrixSize><x>32</x>"
          b"<y>32</y><z>1</z></matrixSize></reconSpace></encoding></ismrmrdHeader>")
CHAIN = ('<configuration><version>2</version><stream><external>'
         '<execute name="cmrecon_gadgets" target="steps" type="python"/><configuration>'
         '<step name="t_busy"/></configuration></external></stream></configuration>')


def test_a_query_is_answered_while_the_chain_is_busy(monkeypatch, server):
    done = []
    release = threading.Event()

    def busy(items, params, ctx):
        """Hold the first readout until the test has its answer (a chain computing a slice)."""
        for item in items:
            release.wait(20)
            done.append(item)
            yield from ()

    monkeypatch.setitem(registry._REGISTRY, "t_busy",
                        StepSpec("t_busy", NoParams, busy, "b", (ismrmrd.Acquisition,), ismrmrd.Image))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        readout = ismrmrd.Acquisition.from_array(np.zeros((2, 32), np.complex64))
        sock.sendall(b"".join(P.encode(m) for m in (P.ConfigText(CHAIN), P.Header(HEADER), readout, readout,
                                                    P.Query(0, 9, "gadgetron::health"))))
        f = sock.makefile("rb")
        reader = P.MessageReader(f)
        answer = reader.read()
        held = len(done)
        release.set()
        sock.sendall(P.encode(P.Close()))
        rest = []
        while (m := reader.read()) is not None and not isinstance(m, P.Close):
            rest.append(m)
        f.close()
    assert answer == P.Response(9, "ok") and held == 0 and len(done) == 2 and rest == []
