"""Slot policy: a trickling or silent client cannot hold a slot, a session has a deadline, the
busy answer cannot be held either, and a health QUERY is answered even when every slot is taken.

The rules are applied while a read waits for the client (on each poll of the socket), so a
client sending one byte a second is cut after the grace period, not when the field it is in the
middle of (1024 bytes of CONFIG_FILE: 17 min at 1 byte/s) is complete.
"""

from __future__ import annotations

import select
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
from cmrecon.io.mrdfile import read_header_xml
from cmrecon.server.client import ReplayError, replay_remote
from cmrecon.server.tcp import ClientPace, MrdServer, SocketStream

#: generous bound on how long after a rule's limit the client may wait for its answer (a loaded
#: 2-core machine); without the rules applied while a read waits, these clients wait 17 min or forever
SLACK_S = 8.0


class _Server:
    """An ``MrdServer`` with the given options, serving in the background for a ``with`` block."""

    def __init__(self, **options) -> None:
        options = {"idle_timeout_s": 60.0, "drain_timeout_s": 0.2, **options}
        self.srv = MrdServer("127.0.0.1", 0, **options)

    def __enter__(self) -> MrdServer:
        self.srv.start_background()
        return self.srv

    def __exit__(self, *exc) -> None:
        self.srv.shutdown()
        self.srv.server_close()


class _Trickler(threading.Thread):
    """A client sending ``payload`` one byte per ``period_s``; notes the server's answer and when."""

    def __init__(self, port: int, payload: bytes, period_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.port, self.payload, self.period_s = port, payload, period_s
        self.stop = threading.Event()
        self.sent = 0
        self.answer = b""
        self.answered_s: float | None = None   # after connecting

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            t0 = time.monotonic()
            while not self.stop.is_set():
                if select.select([sock], [], [], self.period_s)[0]:
                    self.answered_s = time.monotonic() - t0
                    self.answer = _read_all(sock)
                    return
                if self.sent < len(self.payload):
                    sock.send(self.payload[self.sent:self.sent + 1])
                    self.sent += 1

    def answer_within(self, seconds: float) -> str:
        """Trickle for at most ``seconds``, then stop; the one text message the server answered."""
        self.start()
        self.join(seconds)
        self.stop.set()
        assert self.answered_s is not None, f"no answer within {seconds:g} s, after {self.sent} bytes"
        (text,) = _texts(self.answer)
        return text


def _read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes (bounded by the socket's timeout)."""
    chunks = []
    try:
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


def _texts(reply: bytes) -> list[str]:
    """The TEXT messages of a server's reply."""
    import io
    reader, out = P.MessageReader(io.BytesIO(reply)), []
    try:
        while (msg := reader.read()) is not None:
            if isinstance(msg, P.Text):
                out.append(msg.text)
    except ProtocolError:   # a reply cut short by the close
        pass
    return out


# ------------------------------------------------------------------ the rules on a socket's poll


def test_a_read_waiting_for_a_whole_field_is_cut_by_the_rate_before_the_field_completes():
    a, b = socket.socketpair()
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            b.send(b"x")
            time.sleep(0.05)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        pace = ClientPace(min_rate_bps=256, grace_s=0.3)
        stream = SocketStream(a, idle_timeout_s=60.0, period_s=0.05, pace=pace)
        with pytest.raises(ProtocolError, match=r"below 256 bytes/s \(cmrecon serve --min-rate; judged after "
                                                r"--rate-grace 0.3 s\)"):
            stream.read(1024)
        assert 0 < pace.received < 1024 and pace.waited_s > 0.3
    finally:
        stop.set()
        t.join()
        a.close()
        b.close()


def test_a_read_of_a_silent_client_is_cut_by_the_header_deadline_then_not_after_the_header():
    a, b = socket.socketpair()
    try:
        pace = ClientPace(header_timeout_s=0.3)
        stream = SocketStream(a, idle_timeout_s=60.0, period_s=0.05, pace=pace)
        with pytest.raises(ProtocolError, match=r"did not arrive within 0.3 s of connecting \(0 bytes received; "
                                                r"cmrecon serve --header-timeout\)"):
            stream.read(2)
        pace = ClientPace(header_timeout_s=0.3)
        pace.header_arrived()
        stream = SocketStream(a, idle_timeout_s=0.6, period_s=0.05, pace=pace)
        with pytest.raises(TimeoutError):   # only the idle timeout is left
            stream.read(2)
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------ the server


def test_a_client_sending_one_byte_a_second_is_cut_after_the_grace_not_after_its_field():
    with _Server(rate_grace_s=1.0, header_timeout_s=120.0) as srv:
        slow = _Trickler(srv.port, P.encode(P.ConfigFile("fft_rss.xml")))
        err = slow.answer_within(1.0 + SLACK_S)
        assert "below 256 bytes/s (cmrecon serve --min-rate; judged after --rate-grace 1 s)" in err
        assert err.startswith("ERR the client sent") and slow.sent < 1026


def test_a_silent_connection_is_cut_by_the_header_deadline_and_told_why():
    with _Server(header_timeout_s=1.0) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=1.0 + SLACK_S) as sock:
            t0 = time.monotonic()
            (err,) = _texts(_read_all(sock))
            took = time.monotonic() - t0
        assert err == ("ERR the CONFIG and HEADER did not arrive within 1 s of connecting (0 bytes received; "
                       "cmrecon serve --header-timeout)")
        assert took >= 1.0


def test_a_session_whose_header_arrived_in_time_is_not_cut_by_the_header_deadline(case):
    path, _ = case
    with _Server(header_timeout_s=1.0) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(P.encode(P.ConfigFile("fft_rss")) + P.encode(P.Header(read_header_xml(path))))
            time.sleep(2.0)   # past the header deadline, well within the grace and the idle timeout
            sock.sendall(P.encode(P.Close()))
            reply = _read_all(sock)
        assert _texts(reply) == [] and reply.endswith(P.encode(P.Close()))


def test_a_client_trickling_at_a_busy_server_gets_its_busy_answer_within_the_busy_deadline():
    with _Server(max_connections=1, header_timeout_s=120.0) as srv:
        hold = socket.create_connection(("127.0.0.1", srv.port), timeout=10)   # takes the one slot
        try:
            time.sleep(0.2)
            busy = _Trickler(srv.port, P.encode(P.ConfigFile("fft_rss.xml"))).answer_within(2.0 + SLACK_S)
            assert busy.startswith("ERR server busy: 1 connections already open")
        finally:
            hold.close()


def test_a_good_client_is_served_once_the_tricklers_holding_every_slot_are_cut(case):
    path, _ = case
    session = P.encode(P.ConfigFile("fft_rss.xml")) + P.encode(P.Header(read_header_xml(path)))
    with _Server(max_connections=3, header_timeout_s=2.0) as srv:
        slow = [_Trickler(srv.port, session) for _ in range(5)]   # 3 hold the slots, 2 are over the limit
        for s in slow:
            s.start()
        time.sleep(0.5)
        t0, refused = time.monotonic(), 0
        while True:
            try:
                result = replay_remote(path, port=srv.port, chain_name="fft_rss", timeout_s=30)
                break
            except ReplayError as exc:
                assert "busy" in str(exc) and time.monotonic() - t0 < 2.0 + SLACK_S, str(exc)
                refused += 1
                time.sleep(0.2)
        for s in slow:   # each ends when the server answers it
            s.join(2.0 + SLACK_S)
            s.stop.set()
        assert refused >= 1 and len(result.images) == 2   # refused while every slot was held, then served
        answers = [t for s in slow for t in _texts(s.answer)]
        assert sum(t.startswith("ERR server busy: 3 connections already open") for t in answers) == 2
        assert sum(t.startswith("ERR the CONFIG and HEADER did not arrive within 2 s") for t in answers) == 3


# ------------------------------------------------------------------ waiting, computing, deadline


HEADER = (b"<ismrmrdHeader xmlns='http://www.ismrm.org/ISMRMRD'><encoding><encodedSpace><matrixSize>"
          b"<x>32</x><y>32</y><z>1</z></matrixSize></encodedSpace><reconSpace><matrixSize><x>32</x>"
          b"<y>32</y><z>1</z></matrixSize></reconSpace></encoding></ismrmrdHeader>")
CHAIN = ('<configuration><version>2</version><stream><external>'
         '<execute name="cmrecon_gadgets" target="steps" type="python"/><configuration>'
         '<step name="t_compute"/></configuration></external></stream></configuration>')


def _computing_session(monkeypatch, srv: MrdServer, compute_s: float) -> list[str]:
    """A session whose chain computes ``compute_s`` on its first readout while the client, having
    sent everything the chain asked for, sends nothing; then the client sends a readout and CLOSE.
    Returns the TEXTs of the server's reply.
    """
    computed = threading.Event()

    def compute(items, params, ctx):
        for i, _ in enumerate(items):
            if i == 0:
                time.sleep(compute_s)
                computed.set()
            yield from ()

    monkeypatch.setitem(registry._REGISTRY, "t_compute",
                        StepSpec("t_compute", NoParams, compute, "c", (ismrmrd.Acquisition,), ismrmrd.Image))
    readout = P.encode(ismrmrd.Acquisition.from_array(np.zeros((2, 32), np.complex64)))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(P.encode(P.ConfigText(CHAIN)) + P.encode(P.Header(HEADER)) + readout)
        assert computed.wait(compute_s + 30)
        try:
            sock.sendall(readout + P.encode(P.Close()))
        except OSError:
            pass
        reply = _read_all(sock)
    return _texts(reply)


def test_time_spent_computing_does_not_count_against_the_rate_but_the_deadline_does(monkeypatch):
    # about 2 KB arrive at once; 2 s of the chain computing counted as waiting would be 40 KB short
    with _Server(min_rate_bps=20_000, rate_grace_s=0.5) as srv:
        assert _computing_session(monkeypatch, srv, 2.0) == []
    with _Server(session_timeout_s=1.0) as srv:
        (err,) = _computing_session(monkeypatch, srv, 2.0)
        assert err == "ERR the session ran past its 1 s limit (cmrecon serve --session-timeout)"


def test_a_health_query_is_answered_when_every_slot_is_taken():
    with _Server(max_connections=1, idle_timeout_s=20.0, drain_timeout_s=0.5) as srv:
        hold = socket.create_connection(("127.0.0.1", srv.port), timeout=10)   # takes the one slot
        time.sleep(0.2)

        def ask(first: P.Message) -> list:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                f = s.makefile("rwb")
                w, r = P.MessageWriter(f), P.MessageReader(f)
                w.write(first)
                w.flush()
                out = []
                while (msg := r.read()) is not None and not isinstance(msg, P.Close):
                    out.append(msg)
                f.close()
                return out

        (health,) = ask(P.Query(0, 7, "gadgetron::health"))
        assert isinstance(health, P.Response) and health.text == "ok" and health.correlation_id == 7
        (busy,) = ask(P.ConfigFile("fft_rss.xml"))
        assert isinstance(busy, P.Text) and busy.text.startswith("ERR server busy")
        hold.close()


def test_an_idle_client_is_told_about_the_idle_timeout_not_an_internal_error():
    with _Server(idle_timeout_s=0.5, drain_timeout_s=0.2) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            f = s.makefile("rwb")
            w, r = P.MessageWriter(f), P.MessageReader(f)
            w.write(P.ConfigFile("fft_rss.xml"))
            w.flush()   # ...and then nothing
            msgs = []
            while (msg := r.read()) is not None and not isinstance(msg, P.Close):
                msgs.append(msg)
            f.close()
        (err,) = msgs
        assert "idle timeout (cmrecon serve --idle-timeout)" in err.text and "internal" not in err.text


def test_cmrecon_serve_passes_its_slot_options_and_refuses_a_read_ahead_of_zero():
    import subprocess
    import sys
    bad = subprocess.run([sys.executable, "-m", "cmrecon.cli", "serve", "-p", "0", "--read-ahead-mb", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--read-ahead-mb 0 must be > 0" in bad.stderr and "Traceback" not in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "cmrecon.cli", "serve", "-p", "0", "--header-timeout", "1",
                             "--rate-grace", "5", "--read-ahead-mb", "0.5"], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(10):   # log lines first, then the listening line
            line = proc.stderr.readline()
            if "listening on" in line:
                break
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=1.0 + SLACK_S) as sock:
            (err,) = _texts(_read_all(sock))   # silent
        assert "did not arrive within 1 s of connecting" in err
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stderr.close()
