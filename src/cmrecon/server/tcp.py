"""``cmrecon serve``: a threaded TCP server speaking the MRD stream protocol (port 9002).

One thread per connection, bounded in number; each runs a :class:`Session`. A failing session
sends its error to its own client and closes; other connections are not affected.
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import socketserver
import threading
import time
from pathlib import Path

from cmrecon.chain.limits import SessionLimits
from cmrecon.chain.registry import load_steps
from cmrecon.errors import ProtocolError
from cmrecon.io.protocol import Close, Limits, MessageReader, MessageWriter, Query, Response, Text
from cmrecon.server.session import Session, answer_query

log = logging.getLogger("cmrecon.server")
DEFAULT_PORT = 9002


class _Handler(socketserver.BaseRequestHandler):
    server: "MrdServer"

    def handle(self) -> None:
        srv = self.server
        sock: socket.socket = self.request
        conn_id = next(srv.ids)
        clog = logging.getLogger(f"cmrecon.server.conn{conn_id}")
        sock.settimeout(srv.idle_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = sock.makefile("rb")
        wfile = sock.makefile("wb")
        try:
            if not srv.slots.acquire(blocking=False):
                _answer_when_busy(sock, rfile, MessageWriter(wfile), srv, clog, self.client_address)
                return
            try:
                clog.info("connection from %s", self.client_address)
                t0 = time.perf_counter()
                cancel, done = threading.Event(), threading.Event()
                threading.Thread(target=_watch_peer, args=(sock, cancel, done), daemon=True,
                                 name=f"cmrecon-watch{conn_id}").start()
                try:
                    paced = _PacedReader(rfile, srv.session_timeout_s, srv.min_rate_bps)
                    stats = Session(MessageReader(paced, srv.limits), MessageWriter(wfile),
                                    srv.chains_dir, clog, srv.session_limits, cancel).run()
                finally:
                    done.set()
                clog.info("closed: chain '%s', %d items in, %d out, %.2f s%s", stats.chain,
                          stats.items_in, stats.items_out, time.perf_counter() - t0,
                          f", error: {stats.error}" if stats.error else "")
                if stats.error:
                    _drain(sock, srv.drain_timeout_s)
            finally:
                srv.slots.release()
        except OSError as exc:
            clog.info("connection ended: %s", exc)
        finally:
            for f in (wfile, rfile):
                try:
                    f.close()
                except OSError:
                    pass


class _PacedReader:
    """The client's byte stream, refused when a session runs too long or sends too slowly.

    The idle timeout is per read, so a client sending one byte a second held a slot forever
    (40 such clients locked every good client out). The rate counts only the time spent waiting
    for the client, never the time the chain spends computing.
    """

    def __init__(self, raw, session_timeout_s: float, min_rate_bps: float, grace_s: float = 30.0) -> None:
        self.raw, self.session_timeout_s, self.min_rate_bps = raw, session_timeout_s, min_rate_bps
        self.grace_s = grace_s   # waiting time before the rate is judged
        self.t0 = time.monotonic()
        self.waited_s = 0.0
        self.received = 0

    def read(self, n: int) -> bytes:
        """Read up to ``n`` bytes; :class:`ProtocolError` past the deadline or below the rate."""
        t = time.monotonic()
        if t - self.t0 > self.session_timeout_s:
            raise ProtocolError(f"the session ran past its {self.session_timeout_s:g} s limit "
                                "(cmrecon serve --session-timeout)")
        if self.waited_s > self.grace_s and self.received < self.min_rate_bps * self.waited_s:
            raise ProtocolError(f"the client sent {self.received} bytes in {self.waited_s:.0f} s, below "
                                f"{self.min_rate_bps:g} bytes/s (cmrecon serve --min-rate)")
        data = self.raw.read(n)
        self.waited_s += time.monotonic() - t
        self.received += len(data)
        return data


def _answer_when_busy(sock: socket.socket, rfile, writer: MessageWriter, srv: "MrdServer",
                      clog: logging.Logger, address) -> None:
    """Every slot is taken: answer a QUERY (a health check must work under load), else ERR busy."""
    sock.settimeout(2.0)
    try:
        msg = MessageReader(rfile, srv.limits).read()
    except (OSError, ProtocolError):
        msg = None
    if isinstance(msg, Query):
        writer.write(Response(msg.correlation_id, answer_query(msg.text, srv.chains_dir)))
    else:
        clog.warning("refused %s: %d connections already open", address, srv.max_connections)
        writer.write(Text(f"ERR server busy: {srv.max_connections} connections already open; "
                          "try again later"))
    writer.write(Close())
    writer.flush()


def _watch_peer(sock: socket.socket, cancel: threading.Event, done: threading.Event,
                period_s: float = 0.2) -> None:
    """Set ``cancel`` when the client's connection breaks (reset, hang-up) while the session runs.

    The session thread only reads the socket between its chain's steps, so a client that
    resets while a slice is being reconstructed would otherwise leave the server computing for
    the rest of the stream. ``poll`` reports an error or hang-up without consuming data.
    """
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP)
    while not done.is_set():
        if any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in poller.poll(period_s * 1000)):
            cancel.set()
            return


def _drain(sock: socket.socket, timeout_s: float, max_bytes: int = 1 << 28) -> None:
    """After an error reply, stop sending and discard what the client still sends (bounded).

    Closing a socket with unread input makes the kernel send RST, which can destroy our error
    message in the client's receive buffer before the client reads it.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(timeout_s)
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline and total < max_bytes:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            total += len(chunk)
    except OSError:
        pass


class MrdServer(socketserver.ThreadingTCPServer):
    """The MRD stream server.

    Parameters
    ----------
    host, port : where to listen (port 0 picks a free port; see :attr:`port`).
    chains_dir : where named chains resolve.
    max_connections : open sessions at once; more are told the server is busy.
    idle_timeout_s : a client silent this long is disconnected.
    session_timeout_s : a session still reading after this long is ended with an error.
    min_rate_bps : after 30 s spent waiting for the client, fewer bytes per second of waiting
        than this ends the session (a client trickling bytes cannot hold a slot).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128   # listen backlog: 16 simultaneous connects waited 1 s with 5

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 chains_dir: Path | None = None, limits: Limits | None = None,
                 max_connections: int = 32, idle_timeout_s: float = 300.0,
                 drain_timeout_s: float = 5.0, session_limits: SessionLimits | None = None,
                 session_timeout_s: float = 3600.0, min_rate_bps: float = 256.0) -> None:
        load_steps()
        self.session_timeout_s = session_timeout_s
        self.min_rate_bps = min_rate_bps
        self.session_limits = session_limits or SessionLimits()
        self.chains_dir = chains_dir
        self.limits = limits or Limits()
        self.max_connections = max_connections
        self.slots = threading.BoundedSemaphore(max_connections)
        self.idle_timeout_s = idle_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.ids = itertools.count(1)
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start_background(self) -> threading.Thread:
        """Serve in a daemon thread (tests, benchmarks, the in-process demo)."""
        t = threading.Thread(target=self.serve_forever, name="cmrecon-serve", daemon=True)
        t.start()
        return t
