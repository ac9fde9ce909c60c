"""Slot policy: a trickling client cannot hold a slot, a session has a deadline, and a health
QUERY is answered even when every slot is taken.
"""

from __future__ import annotations

import socket
import time

import pytest

from cmrecon.errors import ProtocolError
from cmrecon.io import protocol as P
from cmrecon.server.tcp import MrdServer, _PacedReader


class _Trickle:
    """A client stream that delivers ``chunk`` bytes per read after ``delay_s``."""

    def __init__(self, delay_s: float, chunk: int) -> None:
        self.delay_s, self.chunk = delay_s, chunk

    def read(self, n: int) -> bytes:
        time.sleep(self.delay_s)
        return b"x" * min(n, self.chunk)


def test_a_trickling_client_is_refused_after_the_grace_period():
    paced = _PacedReader(_Trickle(0.02, 1), session_timeout_s=3600, min_rate_bps=256, grace_s=0.1)
    with pytest.raises(ProtocolError, match=r"below 256 bytes/s \(cmrecon serve --min-rate\)"):
        for _ in range(100):
            paced.read(16)


def test_time_spent_computing_does_not_count_against_the_rate_but_the_deadline_does():
    paced = _PacedReader(_Trickle(0.0, 4096), session_timeout_s=0.5, min_rate_bps=256, grace_s=0.0)
    paced.read(4096)
    time.sleep(0.2)            # the chain computes; the client is not asked for anything
    assert paced.read(4096)    # still fine: the client delivered at once whenever asked
    time.sleep(0.4)
    with pytest.raises(ProtocolError, match=r"ran past its 0.5 s limit \(cmrecon serve --session-timeout\)"):
        paced.read(4096)


def test_a_health_query_is_answered_when_every_slot_is_taken():
    srv = MrdServer("127.0.0.1", 0, max_connections=1, idle_timeout_s=20.0, drain_timeout_s=0.5)
    srv.start_background()
    try:
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
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_idle_client_is_told_about_the_idle_timeout_not_an_internal_error():
    srv = MrdServer("127.0.0.1", 0, idle_timeout_s=0.5, drain_timeout_s=0.2)
    srv.start_background()
    try:
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
    finally:
        srv.shutdown()
        srv.server_close()
