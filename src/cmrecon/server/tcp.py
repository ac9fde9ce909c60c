"""``cmrecon serve``: a threaded TCP server speaking the MRD stream protocol (port 9002).

One thread per connection, bounded in number; each runs a :class:`Session`, whose chain computes
while a second thread receives and decodes the client's messages (:class:`ReadAhead`, a bounded
queue) over a :class:`SocketStream`. A failing session sends its error to its own client and
closes; other connections are not affected. The slot rules (:class:`ClientPace`: the HEADER's
deadline, the session's deadline, the minimum data rate) are applied while a read waits for the
client, so a silent or trickling client is cut when a rule is broken, not when its field completes.
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
from typing import Callable

from cmrecon.chain.limits import SessionLimits
from cmrecon.chain.registry import load_steps
from cmrecon.errors import ProtocolError
from cmrecon.io.protocol import Close, Header, Limits, Message, MessageReader, MessageWriter, Query, Response, Text
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
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if not srv.slots.acquire(blocking=False):
                _answer_when_busy(sock, srv, clog, self.client_address)
                return
            try:
                clog.info("connection from %s", self.client_address)
                stats = self._session(sock, srv, clog, conn_id)
            finally:
                srv.slots.release()   # the drain below holds this thread, not a slot
            if stats.error:
                _drain(sock, srv.drain_timeout_s)
        except OSError as exc:
            clog.info("connection ended: %s", exc)

    @staticmethod
    def _session(sock: socket.socket, srv: "MrdServer", clog: logging.Logger, conn_id: int):
        t0 = time.perf_counter()
        cancel, done, stop = threading.Event(), threading.Event(), threading.Event()
        threading.Thread(target=_watch_peer, args=(sock, cancel, done), daemon=True,
                         name=f"cmrecon-watch{conn_id}").start()
        pace = ClientPace(srv.session_timeout_s, srv.min_rate_bps, srv.rate_grace_s, srv.header_timeout_s)
        stream = SocketStream(sock, srv.idle_timeout_s, stop, pace=pace)
        try:
            reader = ReadAhead(_HeaderWatch(MessageReader(stream, srv.limits), pace), stop, srv.read_ahead_bytes)
            pace.chain_waits = reader.waiting   # time the chain computes is not the client's
            stats = Session(reader, MessageWriter(stream), srv.chains_dir, clog, srv.session_limits,
                            cancel).run()
        finally:
            done.set()
            stream.detach()   # blocking again, with the idle timeout, for the drain
        clog.info("closed: chain '%s', %d items in, %d out, %.2f s%s", stats.chain,
                  stats.items_in, stats.items_out, time.perf_counter() - t0,
                  f", error: {stats.error}" if stats.error else "")
        return stats


class StreamStopped(Exception):
    """A :class:`SocketStream` was asked to stop while a read waited for the client."""


class SocketStream:
    """A connected socket as one session's buffered input and gathered output.

    Reads go through an ``io.BufferedReader`` (64 KiB) whose raw reads are ``recv_into`` on the
    non-blocking socket, straight into the caller's array when a payload is larger than the buffer
    (``MessageReader`` reads readouts and pixels with ``readinto``); only when no byte is waiting
    does a read ``poll``, in periods of ``period_s``, so that setting ``stop`` ends a read that
    waits for the client (:class:`StreamStopped`) and a client silent for ``idle_timeout_s``
    raises :class:`TimeoutError`, as a socket timeout did; a ``pace`` (:class:`ClientPace`) counts
    the bytes of every ``recv_into`` and the time spent waiting, and its rules are checked before
    every receive and on every wake-up (:class:`ProtocolError` naming the rule). Writes take a
    message's buffers at once (:meth:`writev`: ``sendmsg``, the pixels not copied) and wait for
    room at most ``idle_timeout_s``.
    """

    def __init__(self, sock: socket.socket, idle_timeout_s: float, stop: threading.Event | None = None,
                 period_s: float = 0.2, buffer_bytes: int = 1 << 16, pace: "ClientPace | None" = None) -> None:
        self.sock = sock
        self.idle_timeout_s = idle_timeout_s
        sock.setblocking(False)
        self._raw = _SocketRaw(sock, idle_timeout_s, stop or threading.Event(), period_s, pace)
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
    socket with the idle timeout would, but waking every ``period_s`` to look at ``stop`` and,
    while waiting to receive, at the ``pace``'s rules.
    """

    def __init__(self, sock: socket.socket, idle_timeout_s: float, stop: threading.Event, period_s: float,
                 pace: "ClientPace | None" = None) -> None:
        self.sock, self.idle_timeout_s, self.stop, self.period_s = sock, idle_timeout_s, stop, period_s
        self.pace = pace
        self.poll_in, self.poll_out = select.poll(), select.poll()
        self.poll_in.register(sock, select.POLLIN | select.POLLPRI)
        self.poll_out.register(sock, select.POLLOUT)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.pace is not None:
            self.pace.check(time.monotonic())
        while True:
            try:
                k = self.sock.recv_into(b)
            except (BlockingIOError, InterruptedError):
                self.wait(self.poll_in, "receive from the client", self.pace)
                continue
            if self.pace is not None:
                self.pace.received += k
            return k

    def wait(self, poller: select.poll, what: str, pace: "ClientPace | None" = None) -> None:
        """Return when the socket is ready (or broken: the next call raises its error); ``pace``'s
        rules are checked on every wake-up and the time waited is added to it.
        """
        deadline = time.monotonic() + self.idle_timeout_s
        while True:
            if self.stop.is_set():
                raise StreamStopped(f"stopped while waiting to {what}")
            now = time.monotonic()
            if pace is not None:
                pace.check(now)
            left = deadline - now
            if left <= 0:
                raise TimeoutError(f"timed out waiting {self.idle_timeout_s:g} s to {what}")
            ready = poller.poll(min(left, self.period_s) * 1000)
            if pace is not None:
                pace.waited(time.monotonic() - now)
            if ready:
                return


_IOV_MAX = 1024


class ClientPace:
    """The slot rules for one connection, checked while a read waits for the client.

    A slot is held by whoever is connected, so each rule bounds how long a client that sends too
    little can hold one: its CONFIG and HEADER must have arrived ``header_timeout_s`` after it
    connected (None: no such deadline); a session still reading ``session_timeout_s`` after it
    connected is ended; and once the server has spent more than ``grace_s`` waiting for the
    client, it must have received ``min_rate_bps`` bytes per second of that waiting. Only time in
    which ``chain_waits()`` is true counts as waiting (the server sets it to
    :meth:`ReadAhead.waiting`: the chain has taken every message and asks for the next), so time
    the chain spends computing never counts against the client's rate; it does count towards
    the session's deadline. :class:`SocketStream` adds the bytes of every receive to
    :attr:`received` and its waiting to :meth:`waited`, and calls :meth:`check` before every
    receive and on every wake-up (every 0.2 s) while it waits.
    """

    def __init__(self, session_timeout_s: float = float("inf"), min_rate_bps: float = 0.0,
                 grace_s: float = 30.0, header_timeout_s: float | None = None,
                 chain_waits: Callable[[], bool] | None = None) -> None:
        self.session_timeout_s, self.min_rate_bps, self.grace_s = session_timeout_s, min_rate_bps, grace_s
        self.header_timeout_s = header_timeout_s
        self.chain_waits = chain_waits
        self.t0 = time.monotonic()
        self.waited_s = 0.0   # seconds spent waiting for the client while the chain waited too
        self.received = 0     # bytes received from the client
        self._header_due = None if header_timeout_s is None else self.t0 + header_timeout_s

    def header_arrived(self) -> None:
        """The HEADER has been read: its deadline no longer applies."""
        self._header_due = None

    def waited(self, seconds: float) -> None:
        """Count ``seconds`` spent waiting for the client (unless the chain was computing)."""
        if self.chain_waits is None or self.chain_waits():
            self.waited_s += seconds

    def check(self, now: float) -> None:
        """Raise :class:`ProtocolError` naming the rule and its limit if one is broken at ``now``."""
        if self._header_due is not None and now > self._header_due:
            raise ProtocolError(f"the CONFIG and HEADER did not arrive within {self.header_timeout_s:g} s of "
                                f"connecting ({self.received} bytes received; cmrecon serve --header-timeout)")
        if now - self.t0 > self.session_timeout_s:
            raise ProtocolError(f"the session ran past its {self.session_timeout_s:g} s limit "
                                "(cmrecon serve --session-timeout)")
        if self.waited_s > self.grace_s and self.received < self.min_rate_bps * self.waited_s:
            raise ProtocolError(f"the client sent {self.received} bytes in {self.waited_s:.1f} s of waiting, "
                                f"below {self.min_rate_bps:g} bytes/s (cmrecon serve --min-rate; judged after "
                                f"--rate-grace {self.grace_s:g} s)")


class _HeaderWatch:
    """A message reader that tells the pace when the HEADER has been read."""

    def __init__(self, reader: MessageReader, pace: ClientPace) -> None:
        self.reader, self.pace = reader, pace

    def read(self) -> Message | None:
        msg = self.reader.read()
        if isinstance(msg, Header):
            self.pace.header_arrived()
        return msg


#: when every slot is taken: seconds in which a connection's first message must arrive (whole
#: message, not per receive), then seconds to discard what it still sends after the busy answer
BUSY_READ_S = 2.0
BUSY_DRAIN_S = 1.0


def _answer_when_busy(sock: socket.socket, srv: "MrdServer", clog: logging.Logger, address) -> None:
    """Every slot is taken: answer a QUERY (a health check must work under load), else ERR busy.

    The first message must arrive whole within :data:`BUSY_READ_S`, so a client trickling its
    first message holds this thread no longer than that.
    """
    stream = SocketStream(sock, BUSY_READ_S, pace=ClientPace(session_timeout_s=BUSY_READ_S))
    try:
        msg = MessageReader(stream, srv.limits).read()
    except (OSError, ProtocolError):   # TimeoutError is an OSError
        msg = None
    writer = MessageWriter(stream)
    if isinstance(msg, Query):
        writer.write(Response(msg.correlation_id, answer_query(msg.text, srv.chains_dir)))
    else:
        clog.warning("refused %s: %d connections already open", address, srv.max_connections)
        writer.write(Text(f"ERR server busy: {srv.max_connections} connections already open; "
                          "try again later"))
    writer.write(Close())
    stream.detach()
    _drain(sock, BUSY_DRAIN_S)   # unread input at close would reset the connection over the answer


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
    session_timeout_s : a session still reading this long after its client connected is ended
        with an error.
    min_rate_bps, rate_grace_s : once more than ``rate_grace_s`` has been spent waiting for the
        client (while its chain waited too), fewer bytes per second of waiting than
        ``min_rate_bps`` ends the session (a client trickling bytes cannot hold a slot).
    header_timeout_s : the CONFIG and HEADER must have arrived this long after connecting (a
        silent or trickling connection cannot hold a slot for the grace period or the idle
        timeout); None: no such deadline.
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
                 session_timeout_s: float = 3600.0, min_rate_bps: float = 256.0, rate_grace_s: float = 30.0,
                 header_timeout_s: float | None = 10.0, read_ahead_bytes: int = READ_AHEAD_BYTES) -> None:
        load_steps()
        self.rate_grace_s = rate_grace_s
        self.header_timeout_s = header_timeout_s
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
