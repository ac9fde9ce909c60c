"""``cmrecon serve``: a threaded TCP server speaking the MRD stream protocol (port 9002).

One thread per connection, bounded in number; each runs a :class:`Session`, whose chain computes
while a second thread receives and decodes the client's messages (:class:`ReadAhead`, a bounded
queue) over a :class:`SocketStream`. A failing session sends its error to its own client and
closes; other connections are not affected.
"""

from __future__ import annotations

import io
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
from cmrecon.server.session import READ_AHEAD_BYTES, ReadAhead, Session, answer_query

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
                cancel, done, stop = threading.Event(), threading.Event(), threading.Event()
                threading.Thread(target=_watch_peer, args=(sock, cancel, done), daemon=True,
                                 name=f"cmrecon-watch{conn_id}").start()
                stream = SocketStream(sock, srv.idle_timeout_s, stop)
                try:
                    paced = _PacedReader(stream, srv.session_timeout_s, srv.min_rate_bps)
                    reader = ReadAhead(MessageReader(paced, srv.limits), stop, srv.read_ahead_bytes)
                    stats = Session(reader, MessageWriter(stream), srv.chains_dir, clog, srv.session_limits,
                                    cancel).run()
                finally:
                    done.set()
                    stream.detach()   # blocking again, with the idle timeout, for the drain
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


class StreamStopped(Exception):
    """A :class:`SocketStream` was asked to stop while a read waited for the client."""


class SocketStream:
    """A connected socket as one session's buffered input and gathered output.

    Reads go through an ``io.BufferedReader`` (64 KiB) whose raw reads are ``recv_into`` on the
    non-blocking socket, straight into the caller's array when a payload is larger than the buffer
    (``MessageReader`` reads readouts and pixels with ``readinto``); only when no byte is waiting
    does a read ``poll``, in periods of ``period_s``, so that setting ``stop`` ends a read that
    waits for the client (:class:`StreamStopped`) and a client silent for ``idle_timeout_s``
    raises :class:`TimeoutError`, as a socket timeout did. Writes take a message's buffers at once
    (:meth:`writev`: ``sendmsg``, the pixels not copied) and wait for room at most
    ``idle_timeout_s``.
    """

    def __init__(self, sock: socket.socket, idle_timeout_s: float, stop: threading.Event | None = None,
                 period_s: float = 0.2, buffer_bytes: int = 1 << 16) -> None:
        self.sock = sock
        self.idle_timeout_s = idle_timeout_s
        sock.setblocking(False)
        self._raw = _SocketRaw(sock, idle_timeout_s, stop or threading.Event(), period_s)
        self._buffered = io.BufferedReader(self._raw, buffer_bytes)
        self.read = self._buffered.read
        self.readinto = self._buffered.readinto

    def writev(self, parts) -> None:
        """Send ``parts`` (bytes-like, in order) as one gathered write; partial sends continue."""
        views = [memoryview(p).cast("B") for p in parts]
        while views:
            try:
                sent = self.sock.sendmsg(views[:_IOV_MAX])
            except (BlockingIOError, InterruptedError):
                self._raw.wait(self._raw.poll_out, "send to the client")
                continue
            while sent:
                if sent >= len(views[0]):
                    sent -= len(views.pop(0))
                else:
                    views[0] = views[0][sent:]
                    sent = 0

    def write(self, data) -> None:
        self.writev([data])

    def flush(self) -> None:
        """Nothing: :meth:`writev` sends at once."""

    def detach(self) -> None:
        """Hand the socket back in blocking mode with the idle timeout (for :func:`_drain`)."""
        self.sock.settimeout(self.idle_timeout_s)


class _SocketRaw(io.RawIOBase):
    """The raw stream under :class:`SocketStream`'s buffer: ``recv_into``, waiting as a blocking
    socket with the idle timeout would, but waking every ``period_s`` to look at ``stop``.
    """

    def __init__(self, sock: socket.socket, idle_timeout_s: float, stop: threading.Event, period_s: float) -> None:
        self.sock, self.idle_timeout_s, self.stop, self.period_s = sock, idle_timeout_s, stop, period_s
        self.poll_in, self.poll_out = select.poll(), select.poll()
        self.poll_in.register(sock, select.POLLIN | select.POLLPRI)
        self.poll_out.register(sock, select.POLLOUT)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while True:
            try:
                return self.sock.recv_into(b)
            except (BlockingIOError, InterruptedError):
                self.wait(self.poll_in, "receive from the client")

    def wait(self, poller: select.poll, what: str) -> None:
        """Return when the socket is ready (or broken: the next call raises its error)."""
        deadline = time.monotonic() + self.idle_timeout_s
        while True:
            if self.stop.is_set():
                raise StreamStopped(f"stopped while waiting to {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out waiting {self.idle_timeout_s:g} s to {what}")
            if poller.poll(min(left, self.period_s) * 1000):
                return


_IOV_MAX = 1024


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

    def _check(self) -> float:
        t = time.monotonic()
        if t - self.t0 > self.session_timeout_s:
            raise ProtocolError(f"the session ran past its {self.session_timeout_s:g} s limit "
                                "(cmrecon serve --session-timeout)")
        if self.waited_s > self.grace_s and self.received < self.min_rate_bps * self.waited_s:
            raise ProtocolError(f"the client sent {self.received} bytes in {self.waited_s:.0f} s, below "
                                f"{self.min_rate_bps:g} bytes/s (cmrecon serve --min-rate)")
        return t

    def read(self, n: int) -> bytes:
        """Read up to ``n`` bytes; :class:`ProtocolError` past the deadline or below the rate."""
        t = self._check()
        data = self.raw.read(n)
        self.waited_s += time.monotonic() - t
        self.received += len(data)
        return data

    def readinto(self, b) -> int:
        """Read into ``b`` (a payload's array); the same checks and accounting as :meth:`read`."""
        t = self._check()
        k = self.raw.readinto(b)
        self.waited_s += time.monotonic() - t
        self.received += k
        return k


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
    read_ahead_bytes : decoded messages a connection may hold before its chain takes them
        (:class:`ReadAhead`); beyond it the server stops reading that client.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128   # listen backlog: 16 simultaneous connects waited 1 s with 5

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 chains_dir: Path | None = None, limits: Limits | None = None,
                 max_connections: int = 32, idle_timeout_s: float = 300.0,
                 drain_timeout_s: float = 5.0, session_limits: SessionLimits | None = None,
                 session_timeout_s: float = 3600.0, min_rate_bps: float = 256.0,
                 read_ahead_bytes: int = READ_AHEAD_BYTES) -> None:
        load_steps()
        self.read_ahead_bytes = read_ahead_bytes
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
