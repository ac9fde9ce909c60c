"""One client session of the MRD stream protocol, independent of how bytes arrive.

Session order (docs/protocol.md): CONFIG_FILE or CONFIG_TEXT, HEADER, data messages, CLOSE;
QUERY may come at any point and is answered at once; TEXT from the client is logged, except one
FIRE / OpenRecon parameter JSON between the HEADER and the first data item, which sets the
chain's step parameters (:mod:`cmrecon.chain.ui_params`). Images stream back as the chain
yields them; errors go back as TEXT ``ERR …`` followed by CLOSE. Nothing here knows about
sockets: the server and tests hand in a :class:`MessageReader` (or a :class:`ReadAhead` around
one, which decodes on its own thread while the chain computes) and a :class:`MessageWriter`.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import ismrmrd
import numpy as np

from cmrecon import __version__
from cmrecon.chain.definition import Chain, load_xml, resolve
from cmrecon.chain.limits import SessionLimits
from cmrecon.chain.registry import known_steps
from cmrecon.chain.runner import run_chain
from cmrecon.chain.ui_params import ParameterSet, apply_parameters, names_other_chain, read_parameter_text
from cmrecon.errors import Cancelled, ChainError, CmreconError, ProtocolError
from cmrecon.io import protocol as P
from cmrecon.io.header import version_warning


class ClientClosed(CmreconError):
    """The client sent CLOSE (or went away) before any data: a legal, empty session."""


#: client TEXT messages kept per session (the rest are counted and logged, not kept)
KEPT_TEXTS = 32
#: characters kept of each
KEPT_TEXT_CHARS = 4096


@dataclass
class SessionStats:
    """What one session did, for the log line at its end."""

    chain: str = ""
    items_in: int = 0
    items_out: int = 0
    error: str = ""
    texts_in: list[str] = field(default_factory=list)   # the first KEPT_TEXTS, each cut to KEPT_TEXT_CHARS
    texts_count: int = 0
    parameters_set: int = 0   # step parameters set by the client's parameter JSON

    def add_text(self, text: str) -> None:
        """Count a client TEXT; keep a bounded excerpt (300 × 1 MiB of TEXT once kept 300 MB)."""
        self.texts_count += 1
        if len(self.texts_in) < KEPT_TEXTS:
            self.texts_in.append(text[:KEPT_TEXT_CHARS])



#: what a :class:`ReadAhead` may hold decoded and not yet taken, per connection
READ_AHEAD_BYTES = 8 * 2**20
READ_AHEAD_ITEMS = 1024


def _held_bytes(msg: object) -> int:
    """About what a decoded message holds in memory (its arrays or text, plus the objects)."""
    if isinstance(msg, ismrmrd.Acquisition):
        return 512 + msg.data.nbytes + msg.traj.nbytes
    data = getattr(msg, "data", None)
    if isinstance(data, np.ndarray):
        return 512 + data.nbytes
    return 512 + len(getattr(msg, "text", "") or getattr(msg, "xml", b""))


class ReadAhead:
    """A :class:`~cmrecon.io.protocol.MessageReader` read on its own thread into a bounded queue.

    The client's bytes are received and decoded while the chain computes on the session's thread
    (numpy and the socket release the GIL), instead of only when the chain asks for its next item.
    The queue holds at most ``max_bytes`` of decoded payload and ``max_items`` messages (one item
    over ``max_bytes`` is let in alone), so a connection's memory stays bounded whatever the
    client sends, and a slow chain stops the thread, which stops reading the socket: the client's
    sends block (TCP back-pressure). A QUERY is answered on the thread as soon as it is decoded.
    Errors of the reader (truncation, a limit, the idle timeout, a reset) are raised by
    :meth:`read` in stream order, after the items decoded before them.

    Parameters
    ----------
    reader : anything with ``read() -> Message | None`` (a ``MessageReader``).
    stop : set by :meth:`close`; the byte stream under ``reader`` should watch it too, so a
        thread waiting for the client wakes (:class:`cmrecon.server.tcp.SocketStream` does).
    max_bytes, max_items : the queue's bounds.
    """

    def __init__(self, reader, stop: threading.Event | None = None, max_bytes: int = READ_AHEAD_BYTES,
                 max_items: int = READ_AHEAD_ITEMS) -> None:
        self._reader = reader
        self.stop = stop or threading.Event()
        self.max_bytes, self.max_items = max_bytes, max_items
        self._queue: collections.deque[tuple[object, int]] = collections.deque()
        self._held = 0
        self.peak_held = 0   # the most payload bytes the queue held at once
        self._cond = threading.Condition()
        self._ended = False   # the thread has queued its last message (CLOSE, end, error)
        self._full = False   # the thread waits for room
        self._taker_waits = False   # read() waits for an item
        self._last: object = None
        self._thread: threading.Thread | None = None

    def start(self, on_query: Callable[[P.Query], None] | None = None,
              cancel: threading.Event | None = None, name: str = "cmrecon-read") -> None:
        """Start the thread; ``on_query`` answers QUERY messages there (else they are queued);
        ``cancel`` is set when the connection resets.
        """
        self._thread = threading.Thread(target=self._run, args=(on_query, cancel), name=name, daemon=True)
        self._thread.start()

    def _run(self, on_query: Callable[[P.Query], None] | None, cancel: threading.Event | None) -> None:
        last: object = None
        try:
            while not self.stop.is_set():
                msg = self._reader.read()
                if on_query is not None and isinstance(msg, P.Query):
                    on_query(msg)
                    continue
                if msg is None or isinstance(msg, P.Close):   # the stream's end: queued below
                    last = msg
                    break
                if not self._put(msg, _held_bytes(msg)):
                    break
        except BaseException as exc:   # raised by read() on the session's thread, in order
            if isinstance(exc, ConnectionResetError) and cancel is not None:
                cancel.set()
            last = exc
        with self._cond:
            if not self.stop.is_set():   # after close() nobody reads on; read() says the end
                self._queue.append((last, 0))
            self._ended = True
            self._cond.notify_all()

    def _put(self, msg: object, size: int) -> bool:
        with self._cond:
            while self._queue and (self._held + size > self.max_bytes or len(self._queue) >= self.max_items):
                if self.stop.is_set():
                    return False
                self._full = True
                self._cond.wait(0.2)
            if self.stop.is_set():
                return False
            self._queue.append((msg, size))
            self._held += size
            self.peak_held = max(self.peak_held, self._held)
            if self._taker_waits:
                self._cond.notify_all()
            return True

    def waiting(self) -> bool:
        """Whether :meth:`read` waits for a message (the chain has taken all and asks for more)."""
        return self._taker_waits

    def read(self) -> P.Message | None:
        """The next message, as ``MessageReader.read`` would return it (or raise its error)."""
        if self._thread is None:
            return self._reader.read()
        with self._cond:
            while not self._queue:
                if self._ended:   # read past the end: the end again, as a reader at its end
                    msg = self._last
                    if isinstance(msg, BaseException):
                        raise msg
                    return None
                self._taker_waits = True
                self._cond.wait()
                self._taker_waits = False
            msg, size = self._queue.popleft()
            self._held -= size
            if self._ended and not self._queue:
                self._last = msg
            # the thread waits on a full queue: wake it when half is taken, so it refills in a
            # burst instead of one GIL hand-over per item
            if self._full and (self._held <= self.max_bytes // 2 and len(self._queue) <= self.max_items // 2):
                self._full = False
                self._cond.notify_all()
        if isinstance(msg, BaseException):
            raise msg
        return msg

    def close(self, join_s: float = 2.0) -> None:
        """Stop the thread (it ends within the stream's wake-up period) and drop what it holds."""
        self.stop.set()
        with self._cond:
            self._queue.clear()
            self._held = 0
            self._ended = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(join_s)


def answer_query(text: str, chains_dir: Path | None) -> str:
    """Answer a QUERY the way Gadgetron's query handlers do, for the queries clients send."""
    from cmrecon.chain.definition import list_chains
    q = text.strip()
    if q in ("gadgetron::version", "cmrecon::version"):
        return f"cmrecon {__version__}"
    if q in ("gadgetron::info", "cmrecon::info"):
        return (f"cmrecon {__version__}: Gadgetron-compatible MRD stream server\n"
                f"chains: {', '.join(list_chains(chains_dir))}\nsteps: {', '.join(known_steps())}")
    if q in ("gadgetron::health", "cmrecon::health"):
        return "ok"
    if q == "cmrecon::chains":
        return "\n".join(list_chains(chains_dir))
    return (f"unknown query '{q}'; known: gadgetron::version, gadgetron::info, "
            "gadgetron::health, cmrecon::chains")


class Session:
    """Drive one protocol session from a reader to a writer.

    Parameters
    ----------
    reader, writer : message codec over the client's byte streams; a :class:`ReadAhead` reader
        is started when the session runs (decoding on its own thread) and stopped at its end.
    chains_dir : where named chains resolve (default: the repository's ``chains/``).
    log : logger for this connection.
    session_limits : what the header and readouts may claim (default ``SessionLimits()``).
    cancel : set by the server when the client's connection breaks; the chain stops at its next
        item boundary.
    """

    def __init__(self, reader: P.MessageReader, writer: P.MessageWriter,
                 chains_dir: Path | None = None, log: logging.Logger | None = None,
                 session_limits: SessionLimits | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.session_limits = session_limits
        self.cancel = cancel
        self.reader = reader
        self.writer = writer
        self.chains_dir = chains_dir
        self.log = log or logging.getLogger("cmrecon.session")
        self.stats = SessionStats()
        self._write_lock = threading.Lock()
        self._chain_by_name = False   # the chain came as CONFIG_FILE (a name), not inline XML

    def _send(self, msg: P.Message) -> None:
        with self._write_lock:
            self.writer.write(msg)
            self.writer.flush()

    def _next_control(self, phase: str) -> P.Message:
        """Next message before data flows; answers QUERY and logs TEXT transparently."""
        while True:
            msg = self.reader.read()
            if msg is None:
                raise ClientClosed(f"client closed the connection while the server expected {phase}")
            if isinstance(msg, P.Query):
                self._answer(msg)
                continue
            if isinstance(msg, P.Text):
                self._log_text(msg.text, f"while the server expected {phase}")
                continue
            if isinstance(msg, P.Close):
                raise ClientClosed(f"client sent CLOSE while the server expected {phase}")
            return msg

    def _log_text(self, text: str, when: str) -> None:
        """Count and log a client TEXT that arrives where no parameter JSON may (ProtocolError if it is
        one: raised inside the chain's input, where a ChainError would read as a step's failure).
        """
        self.stats.add_text(text)
        try:
            params = read_parameter_text(text)
        except ChainError as exc:
            raise ProtocolError(str(exc)) from None
        if params is not None:
            raise ProtocolError(f"a parameter JSON arrived {when}; it is read only between the HEADER (3) "
                                "and the first data item")
        self.log.info("client text: %s", text[:200])

    def _resolve_chain(self) -> Chain:
        msg = self._next_control("CONFIG_FILE (1) or CONFIG_TEXT (2)")
        if isinstance(msg, P.ConfigFile):
            self._chain_by_name = True
            return resolve(msg.name, self.chains_dir)
        if isinstance(msg, P.ConfigText):
            return load_xml(msg.text, "inline")
        raise ProtocolError(f"expected CONFIG_FILE (1) or CONFIG_TEXT (2) first, got {type(msg).__name__}")

    def _parameters(self, chain: Chain) -> tuple[Chain, P.Message | None]:
        """Read up to the first data item: QUERY answered, TEXT logged, one parameter JSON applied.

        Returns the chain (with the client's parameters) and the first message after them (a data
        item, CLOSE, or None when the client went away), which :meth:`_data` starts from.
        """
        seen = False
        while True:
            msg = self.reader.read()
            if isinstance(msg, P.Query):
                self._answer(msg)
                continue
            if not isinstance(msg, P.Text):
                return chain, msg
            self.stats.add_text(msg.text)
            params = read_parameter_text(msg.text)
            if params is None:
                self.log.info("client text: %s", msg.text[:200])
                continue
            if seen:
                raise ProtocolError("a second parameter JSON before the data; send all parameters in one")
            seen = True
            chain = self._apply(chain, params)

    def _apply(self, chain: Chain, params: ParameterSet) -> Chain:
        """``chain`` (or the chain the JSON's ``config`` names) with the JSON's parameters set."""
        if names_other_chain(params.chain, chain):
            if not self._chain_by_name:
                raise ChainError(f"the parameter JSON's config names chain '{params.chain}', but this "
                                 f"session's chain came inline as CONFIG_TEXT (2); drop config or send "
                                 f"the chain's name as CONFIG_FILE (1)")
            self.log.info("parameter JSON: config '%s' replaces chain '%s'", params.chain, chain.name)
            chain = resolve(params.chain, self.chains_dir)
            self.stats.chain = chain.name
        for key in params.ignored:
            self.log.info("parameter JSON: '%s' (a python-ismrmrd-server option) means nothing to "
                          "chain '%s'; ignored", key, chain.name)
        chain = apply_parameters(chain, params.values)
        self.stats.parameters_set = len(params.values)
        if params.values:
            shown = ", ".join(f"{k}={str(v)[:40]}" for k, v in params.values.items())
            self.log.info("parameter JSON sets %d parameter(s) of chain '%s': %s",
                          len(params.values), chain.name, shown[:2000])
        return chain

    def _data(self, first: P.Message | None) -> Iterator[object]:
        """Yield data items, from ``first``, until CLOSE; answer queries and log texts in between."""
        msg = first
        while True:
            if msg is None:
                raise ProtocolError("client disconnected before CLOSE; the stream is incomplete")
            if isinstance(msg, P.Close):
                return
            if isinstance(msg, P.Query):
                self._answer(msg)
            elif isinstance(msg, P.Text):
                self._log_text(msg.text, f"after {self.stats.items_in} data item(s)")
            elif isinstance(msg, P.Error):
                raise ProtocolError(f"client reported an error: {msg.text}")
            elif isinstance(msg, (ismrmrd.Acquisition, ismrmrd.Waveform, ismrmrd.Image)):
                self.stats.items_in += 1
                yield msg
            else:
                raise ProtocolError(f"{type(msg).__name__} is not allowed after the header")
            msg = self.reader.read()

    def _answer(self, query: P.Query) -> None:
        self._send(P.Response(query.correlation_id, answer_query(query.text, self.chains_dir)))

    def run(self) -> SessionStats:
        """Run the session to its end; never raises for client or chain errors.

        Every error is logged, sent to the client as TEXT ``ERR <cause>``, and the session
        closes with CLOSE. A :class:`ReadAhead` reader is started here and stopped at the end.
        """
        ahead = self.reader if isinstance(self.reader, ReadAhead) else None
        if ahead is not None:
            ahead.start(self._answer, self.cancel, name=f"{threading.current_thread().name}-read")
        try:
            self._run()
        finally:
            if ahead is not None:
                ahead.close()
        return self.stats

    def _run(self) -> None:
        try:
            chain = self._resolve_chain()
            self.stats.chain = chain.name
            header = self._next_control("HEADER (3)")
            if not isinstance(header, P.Header):
                raise ProtocolError(f"expected HEADER (3) after the config, got {type(header).__name__}")
            self.log.info("session: chain '%s'", chain.name)
            warning = version_warning(header.xml)
            if warning:  # our chains still run; the client learns why a Gadgetron would not
                self.log.warning("%s", warning)
                self._send(P.Text(f"WARNING {warning}"))
            chain, first = self._parameters(chain)
            for item in run_chain(chain, header.xml, self._data(first), self.log, self.session_limits,
                                  self.cancel):
                self._send(item)
                self.stats.items_out += 1
        except (ClientClosed, Cancelled) as exc:
            self.log.info("%s", exc)
        except CmreconError as exc:
            self._fail(str(exc))
        except TimeoutError:
            self._fail("the client sent nothing for longer than the server's idle timeout "
                       "(cmrecon serve --idle-timeout)")
        except ConnectionError as exc:   # reset or broken pipe: nobody is left to tell
            self.log.info("connection lost: %s", exc)
        except Exception as exc:  # our own defect: the client still learns why
            self.log.exception("internal error")
            self._fail(f"internal server error: {type(exc).__name__}: {exc}")
        self._close()

    def _fail(self, text: str) -> None:
        self.stats.error = text
        self.log.error("session failed: %s", text)
        try:
            self._send(P.Text(f"ERR {text}"))
        except OSError:
            self.log.info("could not tell the client (connection gone)")

    def _close(self) -> None:
        try:
            self._send(P.Close())
        except OSError:
            pass
