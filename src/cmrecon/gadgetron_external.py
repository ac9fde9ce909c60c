"""Entry points that let a real Gadgetron run our steps as external Python gadgets.

A chain XML step ``<execute name="cmrecon_gadgets" target="steps" type="python"/>`` makes
Gadgetron spawn ``python -m gadgetron <port> cmrecon_gadgets steps``; the PyPI ``gadgetron``
package connects back, reads CONFIG and HEADER into its ``Connection`` and calls
``cmrecon_gadgets.steps(connection)``, which resolves to :func:`entry_point`.

From there on we own the socket (docs/protocol.md, "Inside a real Gadgetron"):

* the step properties are parsed from the ``<configuration>`` Gadgetron sent and the steps run
  through :func:`cmrecon.chain.runner.run_chain`, the same code as ``cmrecon serve``;
* Gadgetron's messages are read and decoded on a thread into a bounded queue, so Gadgetron's
  writes to us never wait on our computation, and the end of the connection is seen at once:
  a connection that ends before CLOSE, or after CLOSE while we still owe images, ends this
  process within a second (the package's own reader loops forever on a closed socket: 40 % CPU
  per orphan, for as long as the machine runs);
* a watchdog ends the process when its parent (the Gadgetron server) is gone;
* a failing step sends ERROR (id 8) with its cause before the package's CLOSE, then exits
  non-zero, so Gadgetron reports the cause instead of ending the session silently.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any, Callable, Iterator

import ismrmrd

from cmrecon.chain.definition import GROUP_TARGET, build_chain, group_steps, xml_properties
from cmrecon.chain.runner import StepFailure, run_chain
from cmrecon.errors import CmreconError, ProtocolError
from cmrecon.io import protocol as P

log = logging.getLogger("cmrecon.gadgetron")

#: exit statuses of an external that stops on its own (Gadgetron only logs them)
EXIT_STEP_FAILED = 1
EXIT_CONNECTION_LOST = 3
EXIT_PARENT_GONE = 4
#: how often the parent watchdog looks, seconds
PARENT_POLL_S = 0.2
#: decoded messages held between the socket reader and the chain
INBOX_ITEMS = 1024

_DATA_TYPES = (ismrmrd.Acquisition, ismrmrd.Image, ismrmrd.Waveform)


def _configuration(connection: Any) -> ET.Element | None:
    """The ``<configuration>`` element Gadgetron sent (None when it sent nothing)."""
    config = getattr(connection, "config", None)
    if config is None:
        raw = getattr(getattr(connection, "raw_bytes", None), "config", None)
        if raw and raw.strip(b"\x00 \n"):
            raise CmreconError(f"the step configuration Gadgetron sent is not XML: {raw[:200]!r}")
        return None
    if isinstance(config, (bytes, str)):
        config = ET.fromstring(config)
    if config.tag != "configuration":
        found = config.find(".//configuration")
        config = found if found is not None else config
    return config


def _raw_socket(connection: Any) -> socket.socket:
    """The socket under the PyPI package's ``Connection`` (``connection.socket.socket``)."""
    sock = getattr(getattr(connection, "socket", None), "socket", None)
    if not isinstance(sock, socket.socket):
        raise TypeError("cmrecon's Gadgetron entry points need the gadgetron package's Connection "
                        f"(connection.socket.socket), got {type(connection).__name__}")
    return sock


def _die(status: int, reason: str) -> None:
    """End this process now, from any thread: nobody is left to receive what it would compute."""
    log.error("%s; this external exits (status %d)", reason, status)
    logging.shutdown()
    os._exit(status)


def watch_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> threading.Thread:
    """Start a daemon thread that ends the process once ``parent_pid`` is no longer its parent.

    When Gadgetron dies the kernel re-parents its children (to init or a subreaper), so
    ``os.getppid()`` changes; the thread then calls :func:`os._exit`.
    """
    def run() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                _die(EXIT_PARENT_GONE, f"the Gadgetron process {parent_pid} that started this "
                                       "external is gone")

    thread = threading.Thread(target=run, name="cmrecon-parent-watchdog", daemon=True)
    thread.start()
    return thread


class Inbox:
    """Gadgetron's messages, read and decoded on a thread; the connection's end watched.

    Parameters
    ----------
    stream : binary file object over the connection (``sock.makefile('rb')``), positioned
        after HEADER.
    max_items : bound on decoded messages waiting for the chain.
    on_lost : called with a reason when the connection ends while output is still owed
        (default: end the process with :data:`EXIT_CONNECTION_LOST`).
    """

    _END = object()

    def __init__(self, stream: Any, max_items: int = INBOX_ITEMS,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self._reader = P.MessageReader(stream)
        self._stream = stream
        self._queue: queue.Queue = queue.Queue(max_items)
        self._on_lost = on_lost or (lambda reason: _die(EXIT_CONNECTION_LOST, reason))
        self.done = threading.Event()  # set once our output is complete: an EOF is then normal
        self._thread = threading.Thread(target=self._run, name="cmrecon-gadgetron-reader", daemon=True)
        self._thread.start()

    def _lost(self, reason: str) -> None:
        if not self.done.is_set():
            self._on_lost(reason)

    def _run(self) -> None:
        try:
            while True:
                msg = self._reader.read()
                if msg is None:
                    self._lost("Gadgetron closed the connection before CLOSE (session aborted)")
                    self._queue.put(ProtocolError("Gadgetron closed the connection before CLOSE"))
                    return
                if isinstance(msg, P.Close):
                    self._queue.put(self._END)
                    break
                if isinstance(msg, _DATA_TYPES):
                    self._queue.put(msg)
                elif isinstance(msg, P.Text):
                    log.info("text from Gadgetron: %s", msg.text[:200])
                else:
                    self._queue.put(ProtocolError(
                        f"Gadgetron sent {type(msg).__name__}, which cmrecon steps do not take "
                        "(they take acquisitions, waveforms and images)"))
                    return
        except (ProtocolError, OSError, ValueError) as exc:
            self._lost(f"the connection to Gadgetron failed: {exc}")
            self._queue.put(ProtocolError(f"the connection to Gadgetron failed: {exc}"))
            return
        # After CLOSE Gadgetron sends nothing more: the next read returns only at end of stream.
        try:
            while self._stream.read(1):
                pass
        except (OSError, ValueError):
            pass
        self._lost("Gadgetron closed the connection while this external was still computing "
                   "(session aborted)")

    def items(self) -> Iterator[Any]:
        """Data messages in arrival order, until CLOSE.

        Raises
        ------
        ProtocolError
            The connection failed or carried a message type no step takes.
        """
        while True:
            got = self._queue.get()
            if got is self._END:
                return
            if isinstance(got, Exception):
                raise got
            yield got


def send_error(connection: Any, text: str) -> None:
    """Write an ERROR (8) message: ``uint16 id, uint64 length, text`` on the connection's socket."""
    _raw_socket(connection).sendall(P.encode(P.Error(text)))


def run_step_on_connection(step_name: str, connection: Any) -> None:
    """Run one registered step (or, for ``target="steps"``, a group) over a Gadgetron ``Connection``.

    Raises
    ------
    SystemExit
        Exit status 1 after ERROR was sent, when a step or its configuration failed.
    """
    watch_parent(os.getppid())
    from cmrecon.runtime import Settings, configure
    configure(Settings.build())   # this process's entry: the thread policy, once
    sock = _raw_socket(connection)
    where = f"Gadgetron external '{step_name}'"
    inbox = None
    try:
        config = _configuration(connection)
        group = (group_steps(config, where) if step_name == GROUP_TARGET
                 else [(step_name, xml_properties(config, where))])
        chain = build_chain(where, group)
        header = connection.raw_bytes.header.rstrip(b"\x00")
        inbox = Inbox(sock.makefile("rb"))
        for item in run_chain(chain, header, inbox.items(), log):
            sock.sendall(P.encode(item))
        inbox.done.set()
    except (StepFailure, CmreconError) as exc:
        _fail(sock, inbox, str(exc) if isinstance(exc, StepFailure) else f"step '{step_name}': {exc}", exc)
    except OSError as exc:  # our writes failed: Gadgetron is gone
        _die(EXIT_CONNECTION_LOST, f"writing to Gadgetron failed: {exc}")
    except Exception as exc:  # a defect in our code: still tell Gadgetron why
        _fail(sock, inbox, f"step '{step_name}' crashed: {type(exc).__name__}: {exc}", exc, trace=True)


def _fail(sock: socket.socket, inbox: Inbox | None, message: str, exc: BaseException,
          trace: bool = False) -> None:
    if inbox is not None:
        inbox.done.set()  # Gadgetron may close as soon as it reads ERROR: that is not a loss
    (log.exception if trace else log.error)("%s", message)
    try:
        sock.sendall(P.encode(P.Error(message)))
    except OSError as send_exc:
        _die(EXIT_CONNECTION_LOST, f"could not send ERROR to Gadgetron ({send_exc}): {message}")
    raise SystemExit(EXIT_STEP_FAILED) from exc


def entry_point(step_name: str) -> Callable[[Any], None]:
    """The callable Gadgetron's Python runner invokes for ``target=<step_name>``."""

    def target(connection: Any) -> None:
        run_step_on_connection(step_name, connection)

    target.__name__ = step_name
    target.__doc__ = f"Gadgetron external entry point of cmrecon step '{step_name}'."
    return target
