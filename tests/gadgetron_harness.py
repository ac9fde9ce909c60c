"""Gadgetron's side of the external-Python-gadget interface, for tests.

Gadgetron 4.7 opens a port, spawns ``python -m gadgetron <port> <module> <target>`` (the PyPI
``gadgetron`` package) and talks to the child: CONFIG (2, the <configuration> element),
HEADER (3), the stream, CLOSE (4); the child answers with items and CLOSE, or ERROR (8).

Where the real server is strict, this harness is too:

* **header version**: Gadgetron re-serialises the ISMRMRD header for every external with C++
  ISMRMRD, which throws "XML header version does not match library schema version" when
  ``<version>`` differs from its schema version; :func:`play_gadgetron` refuses such a header
  the same way (:class:`GadgetronRefused`) and never starts the external;
* **spawn timing**: the stock ``gadgetron_ismrmrd_client``'s ``--timeout`` (10,000 ms) bounds
  its connect only (docs/gadgetron.md), but a site expects a small case back well within it, so
  :func:`play_gadgetron` fails when the external (spawned as Gadgetron spawns it) has not
  answered the whole session within ``deadline_s`` (default those 10 s);
* **parent death**: run as a script (``python gadgetron_harness.py PORT_FILE H5 TARGET CONFIG N``)
  it plays Gadgetron for ``N`` items and then waits without sending CLOSE, printing the child's
  PID, so a test can kill this "server" and watch what the child does.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from cmrecon.io import protocol as P
from cmrecon.io.header import header_version, schema_version

CLIENT_DEFAULT_TIMEOUT_S = 10.0  # gadgetron_ismrmrd_client --timeout default (ms 10000)


class GadgetronRefused(RuntimeError):
    """What the real server would refuse before starting an external."""


@dataclass
class Played:
    """One external session: what came back, how the child ended, and how long it took."""

    messages: list = field(default_factory=list)
    returncode: int | None = None
    stderr: str = ""
    connect_s: float = 0.0   # spawn -> the child connected
    session_s: float = 0.0   # spawn -> the child's CLOSE (or end of stream)


def check_header_version(header: bytes) -> None:
    """Refuse a header the way C++ ISMRMRD's serialize does inside Gadgetron."""
    v = header_version(header)
    if v is not None and v != schema_version():
        raise GadgetronRefused("XML header version does not match library schema version "
                               f"(header {v}, library {schema_version()})")


def spawn_external(target: str, stderr=None, module: str = "cmrecon_gadgets"
                   ) -> tuple[subprocess.Popen, socket.socket, float]:
    """Listen on a free port and start the external as Gadgetron does; return (child, listener, t0).

    ``stderr``: a file for the child's log (a pipe nobody reads could block a chatty child).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    t0 = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "gadgetron", str(port), module, target],
                             stderr=stderr if stderr is not None else subprocess.DEVNULL)
    return child, listener, t0


def _frames(config_xml: str, header: bytes, items, close: bool = True) -> bytes:
    buf = io.BytesIO()
    w = P.MessageWriter(buf)
    w.write(P.ConfigText(config_xml))  # id 2, uint32 length: what Gadgetron sends an external
    w.write(P.Header(header))
    for item in items:
        w.write(item)
    if close:
        w.write(P.Close())
    return buf.getvalue()


def play_gadgetron(target: str, config_xml: str, header: bytes, items,
                   deadline_s: float = CLIENT_DEFAULT_TIMEOUT_S, timeout_s: float = 120.0,
                   module: str = "cmrecon_gadgets") -> Played:
    """Spawn the external the way Gadgetron does and run one session through it.

    Raises
    ------
    GadgetronRefused
        The header's version would be refused by a real Gadgetron.
    TimeoutError
        The child did not connect, or did not finish the session, within ``deadline_s``
        (checked only when ``deadline_s`` is not None; ``timeout_s`` bounds the wait either way).
    """
    check_header_version(header)
    log = tempfile.TemporaryFile()
    child, listener, t0 = spawn_external(target, stderr=log, module=module)
    out = Played()
    try:
        listener.settimeout(timeout_s)
        conn, _ = listener.accept()
        out.connect_s = time.monotonic() - t0
        listener.close()
        with conn, conn.makefile("rb") as fh:   # the file holds the socket open too: close both
            conn.sendall(_frames(config_xml, header, items))
            conn.settimeout(timeout_s)
            reader = P.MessageReader(fh)
            while (m := reader.read()) is not None:
                out.messages.append(m)
                if isinstance(m, P.Close):
                    break
            out.session_s = time.monotonic() - t0
        out.returncode = child.wait(timeout=timeout_s)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.seek(0)
        out.stderr = log.read().decode("utf-8", errors="replace")
        log.close()
    if deadline_s is not None and out.session_s > deadline_s:
        raise TimeoutError(f"external '{target}' took {out.session_s:.1f} s (connected after "
                           f"{out.connect_s:.1f} s); the stock client gives up after {deadline_s:.0f} s")
    return out


def _serve_without_close(port_file: str, h5: str, target: str, config_xml: str, n_items: int) -> None:
    """Script mode: start the external, send ``n_items`` items, print its PID, wait forever."""
    from cmrecon.io.mrdfile import iter_items, read_header_xml
    header = read_header_xml(h5)
    items = [it for _, it in zip(range(n_items), iter_items(h5))]
    child, listener, _ = spawn_external(target)
    conn, _ = listener.accept()
    conn.sendall(_frames(config_xml, header, items, close=False))
    with open(port_file, "w") as f:
        f.write(f"{child.pid}\n")
    while True:
        time.sleep(60)


if __name__ == "__main__":
    _serve_without_close(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
