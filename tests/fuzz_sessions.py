"""Mutated MRD sessions against a live server: the bounded fuzzer the tests run and bench/ scales up.

A valid session (CONFIG_FILE fft_rss, HEADER, noise and imaging readouts, CLOSE) is serialised once;
each fuzz session sends it mutated — truncated, bytes flipped, a length field or message id
replaced, a header's matrix inflated — and reads the reply until CLOSE, EOF or a deadline. The
server must answer every session (images or ``ERR …`` then CLOSE, or close the connection), never
hang past the deadline, never report an internal error, and keep serving.
"""

from __future__ import annotations

import io
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass

import ismrmrd
import numpy as np

from cmrecon.io import protocol as P

from mrd_cases import make_case


def valid_session(seed: int = 0, claim_matrix: int | None = None) -> bytes:
    """The bytes of one good fft_rss session (2 slices, 4 coils, 16×16); ``claim_matrix`` makes
    its header claim that matrix instead (the data stay 16×16).
    """
    case = make_case(seed=seed, nx=16, ny=16, coils=4, slices=2, noise_readouts=4)
    header = case.header_xml.encode()
    if claim_matrix:
        header = (header.replace(b"<x>32</x>", f"<x>{2 * claim_matrix}</x>".encode(), 1)
                  .replace(b"<y>16</y>", f"<y>{claim_matrix}</y>".encode()))
    buf = io.BytesIO()
    w = P.MessageWriter(buf)
    w.write(P.ConfigFile("fft_rss.xml"))
    w.write(P.Header(header))
    for item in case.items:
        w.write(item)
    w.write(P.Close())
    w.flush()
    return buf.getvalue()


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One mutation of a session's bytes, and its kind."""
    kind = str(rng.choice(["truncate", "flip", "length", "message_id", "matrix", "control"]))
    b = bytearray(data)
    if kind == "truncate":
        return kind, bytes(b[: int(rng.integers(0, len(b)))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 16))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        return kind, bytes(b)
    if kind == "length":   # a 4- or 8-byte field somewhere claims something huge or odd
        at = int(rng.integers(0, len(b) - 8))
        b[at:at + 4] = struct.pack("<I", int(rng.choice([0, 1, 2**31 - 1, 2**32 - 1, 65535])))
        return kind, bytes(b)
    if kind == "message_id":
        at = 1024 + int(rng.integers(0, 4))        # the HEADER message id follows CONFIG_FILE
        b[at:at + 2] = struct.pack("<H", int(rng.integers(0, 1200)))
        return kind, bytes(b)
    if kind == "matrix":   # a header whose matrix claims 4096² or more
        return kind, valid_session(claim_matrix=int(rng.choice([4096, 65536, 100000])))
    return kind, bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))   # "control": noise


@dataclass
class Outcome:
    kind: str
    result: str   # images | err | closed | hang
    detail: str = ""
    nonfinite: int = 0   # images that came back holding NaN or infinite pixels


def play(port: int, payload: bytes, kind: str, deadline_s: float = 10.0) -> Outcome:
    """Send ``payload``, half-close, and classify what comes back before ``deadline_s``."""
    with socket.create_connection(("127.0.0.1", port), timeout=deadline_s) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass   # the server may refuse and close while we still send
        f = s.makefile("rb")
        reader = P.MessageReader(f)
        images, nonfinite, errors, t0 = 0, 0, [], time.monotonic()
        try:
            while time.monotonic() - t0 < deadline_s:
                msg = reader.read()
                if msg is None or isinstance(msg, P.Close):
                    break
                if isinstance(msg, P.Text) and msg.text.startswith("ERR"):
                    errors.append(msg.text)
                elif not isinstance(msg, P.Text):
                    images += 1
                    nonfinite += isinstance(msg, ismrmrd.Image) and not np.isfinite(msg.data).all()
            else:
                return Outcome(kind, "hang")
        except socket.timeout:
            return Outcome(kind, "hang")
        except (OSError, P.ProtocolError) as exc:   # reset after an error reply: closed
            return Outcome(kind, "closed", str(exc))
        finally:
            f.close()
    if errors:
        return Outcome(kind, "err", errors[0], nonfinite)
    return Outcome(kind, "images" if images else "closed", nonfinite=nonfinite)


def fuzz(port: int, sessions: int, seed: int = 0) -> list[Outcome]:
    """``sessions`` mutated sessions (every tenth one unmutated, as a control)."""
    rng = np.random.default_rng(seed)
    base = valid_session()
    out = []
    for i in range(sessions):
        if i % 10 == 0:
            out.append(play(port, base, "valid"))
        else:
            out.append(play(port, *reversed(mutate(base, rng))))
    return out


def summary(outcomes: list[Outcome]) -> Counter:
    """``Counter`` of ``(kind, result)``."""
    return Counter((o.kind, o.result) for o in outcomes)
