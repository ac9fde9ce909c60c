"""Gadgetron's side of the external-Python-gadget interface, for tests.

Gadgetron opens a port, spawns ``python -m gadgetron <port> <module> <target>`` (the PyPI
``gadgetron`` package) and talks to the child: CONFIG (2, the <configuration> element),
HEADER (3), the stream, CLOSE (4); the child answers with items and CLOSE, or ERROR (8).
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys

from cmrecon.io import protocol as P


def play_gadgetron(target: str, config_xml: str, header: bytes, items,
                   timeout_s: float = 60.0) -> tuple[list, int, str]:
    """Spawn the external the way Gadgetron does; return (messages received, exit code, stderr)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-m", "gadgetron", str(port), "cmrecon_gadgets", target],
                             stderr=subprocess.PIPE, text=True)
    listener.settimeout(timeout_s)
    conn, _ = listener.accept()
    listener.close()
    buf = io.BytesIO()
    w = P.MessageWriter(buf)
    w.write(P.ConfigText(config_xml))  # id 2, uint32 length: what Gadgetron sends an external
    w.write(P.Header(header))
    for item in items:
        w.write(item)
    w.write(P.Close())
    conn.sendall(buf.getvalue())
    reader = P.MessageReader(conn.makefile("rb"))
    got = []
    while (m := reader.read()) is not None:
        got.append(m)
        if isinstance(m, P.Close):
            break
    conn.close()
    _, err = child.communicate(timeout=timeout_s)
    return got, child.returncode, err
