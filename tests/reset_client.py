"""A client that streams a session and resets its connection once the chain is under way.

Shared by the server's cancellation tests (tests/server/test_cancel*.py): the reset (SO_LINGER 0,
then close: an RST, not a FIN) is what a scanner's client that crashes or is killed sends.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Callable, Iterable

from cmrecon.io import protocol as P


def stream_then_reset(port: int, chain_xml: str, header: bytes, items: Iterable, started: Callable[[], bool],
                      what: str, timeout_s: float) -> None:
    """Send CONFIG, HEADER, ``items`` and CLOSE; once ``started()`` holds, reset the connection.

    Raises AssertionError naming ``what`` did not start when ``started()`` is still false after
    ``timeout_s`` (a bound against hanging, not a timing).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    stream = sock.makefile("wb")
    writer = P.MessageWriter(stream)
    writer.write(P.ConfigText(chain_xml))
    writer.write(P.Header(header))
    for item in items:
        writer.write(item)
    writer.write(P.Close())
    writer.flush()
    deadline = time.monotonic() + timeout_s
    while not started() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started(), f"{what} did not start"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # close → RST
    stream.close()
    sock.close()
