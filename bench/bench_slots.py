"""Slot policy under load: a good client among slow ones, 16 clients at once, a reset frees CPU.

Against ``cmrecon serve`` with its defaults (a subprocess on a free port: 32 connections, idle
timeout 300 s, CONFIG and HEADER within 10 s of connecting, 256 B/s judged after 30 s of waiting
for the client, session deadline 3600 s; when every slot is taken, the first message within 2 s):

(a) a good client (psir_classic on tests/data/sim_lge_r2_embedded.h5) while 40 clients each
    trickle a valid session at 1 byte/s (from its first byte, or after sending the CONFIG and
    HEADER at once), and while 32 connections send nothing: is its first try
    refused, and, retrying once a second, when does it get its images (bitwise equal to the
    in-process replay)? How many of the slow connections has the server cut by then, and why?
(b) 16 clients at once (three recorded streams and chains among them), several rounds: each gets
    exactly its own images (bitwise equal to ``replay_in_process``); connect and session times
    (a full listen backlog shows as connects of 1 s and more: the SYN is retransmitted).
(c) a client resets (RST) while the server computes its session (cine_lps on the 2-slice R 8
    cine stream): the server process's CPU seconds after the reset, per window, against a control
    session that runs to its end.

Run:  .venv/bin/python bench/bench_slots.py [--slow 40] [--silent 32] [--concurrent 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ismrmrd

from cmrecon.io import protocol as P
from cmrecon.io.mrdfile import iter_items, read_header_xml
from cmrecon.server.client import ReplayError, query_server, replay_in_process, replay_remote

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
GOOD = (DATA / "sim_lge_r2_embedded.h5", "psir_classic")
MIXED = [GOOD, (DATA / "sim_lge_full.h5", "fft_rss"), (DATA / "sim_lge_pf_2slice.h5", "psir_classic")]
HEAVY = (DATA / "sim_cine_r8_kt_2slice.h5", "cine_lps")


# ------------------------------------------------------------------ the server and what it spends


def _end_with_parent() -> None:
    """In the server's process: SIGTERM when this bench dies (a crashed bench left a server behind)."""
    import ctypes
    import signal
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def start_server(log) -> tuple[subprocess.Popen, int]:
    """``cmrecon serve`` with its defaults on a free port, ready (answers a health QUERY)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cmrecon.cli", "serve", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log, preexec_fn=_end_with_parent)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cmrecon serve exited with {proc.returncode}")
        try:
            if query_server("gadgetron::health", port=port, timeout_s=2) == "ok":
                return proc, port
        except ReplayError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("cmrecon serve did not answer within 120 s")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_bytes(path: Path, chain: str) -> bytes:
    """One whole session (CONFIG_FILE, HEADER, every item, CLOSE) as sent on the wire."""
    buf = io.BytesIO()
    w = P.MessageWriter(buf)
    w.write(P.ConfigFile(f"{chain}.xml"))
    w.write(P.Header(read_header_xml(path)))
    for item in iter_items(path):
        w.write(item)
    w.write(P.Close())
    w.flush()
    return buf.getvalue()


def same_images(a: list[ismrmrd.Image], b: list[ismrmrd.Image]) -> bool:
    """Bitwise equal: the same number of images, each with the same header, attributes and pixels."""
    return len(a) == len(b) and all(
        bytes(x.getHead()) == bytes(y.getHead()) and x.attribute_string == y.attribute_string
        and x.data.tobytes() == y.data.tobytes() for x, y in zip(a, b))


def _ms(values: list[float], q: float) -> str:
    return f"{1000 * statistics.quantiles(values, n=100, method='inclusive')[q - 1]:.1f}" if len(values) > 1 \
        else f"{1000 * values[0]:.1f}"


# ------------------------------------------------------------------ (a) a good client among slow ones


class Slow(threading.Thread):
    """A connection that sends the first ``at_once`` bytes of ``payload`` at once, the rest one
    byte per ``period_s`` (nothing when it is empty), and notes when the server answers or cuts it,
    and with what.
    """

    def __init__(self, port: int, payload: bytes, period_s: float = 1.0, at_once: int = 0) -> None:
        super().__init__(daemon=True)
        self.port, self.payload, self.period_s, self.at_once = port, payload, period_s, at_once
        self.stop = threading.Event()
        self.cut_s: float | None = None   # seconds after connecting that the server answered/closed
        self.reason = ""

    def run(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except OSError as exc:
            self.cut_s, self.reason = 0.0, f"connect failed: {exc}"
            return
        t0, sent = time.monotonic(), self.at_once
        with sock:
            sock.sendall(self.payload[:self.at_once])
            while not self.stop.is_set():
                readable, _, _ = select.select([sock], [], [], self.period_s)
                if readable:
                    try:
                        got = sock.recv(4096)
                    except OSError as exc:
                        got = str(exc).encode()
                    self.cut_s = time.monotonic() - t0
                    self.reason = _reason(got)
                    return
                if sent < len(self.payload):
                    try:
                        sock.send(self.payload[sent:sent + 1])
                        sent += 1
                    except OSError as exc:
                        self.cut_s, self.reason = time.monotonic() - t0, f"send failed: {exc}"
                        return


def _reason(reply: bytes) -> str:
    for needle, reason in ((b"busy", "ERR busy"), (b"bytes/s", "ERR min rate"), (b"idle timeout", "ERR idle"),
                           (b"s limit", "ERR session deadline"), (b"header-timeout", "ERR header deadline")):
        if needle in reply:
            return reason
    return "closed" if not reply else f"other: {reply[:60]!r}"


@dataclass
class Served:
    first_try: str       # "served" or the refusal
    served_s: float      # from the first try to the images (nan: not within the patience)
    tries: int
    equal: bool


def good_client(port: int, reference: list[ismrmrd.Image], patience_s: float) -> Served:
    """Replay the good stream, retrying once a second while the server says it is busy."""
    t0, tries, first = time.monotonic(), 0, ""
    while True:
        tries += 1
        try:
            result = replay_remote(GOOD[0], port=port, chain_name=GOOD[1], timeout_s=60)
        except ReplayError as exc:
            first = first or ("refused: busy" if "busy" in str(exc) else f"failed: {exc}")
            if "busy" not in str(exc) or time.monotonic() - t0 > patience_s:
                return Served(first, float("nan"), tries, False)
            time.sleep(1.0)
            continue
        return Served(first or "served", time.monotonic() - t0, tries, same_images(result.images, reference))


def crowd(port: int, reference: list[ismrmrd.Image], n: int, payload: bytes, patience_s: float,
          what: str, at_once: int = 0) -> str:
    """One row of table (a): ``n`` slow connections, then the good client."""
    slow = [Slow(port, payload, at_once=at_once) for _ in range(n)]
    for s in slow:
        s.start()
    if slow:
        time.sleep(3.0)   # all connected; those over the slot limit have had their busy answer
    t_good = time.monotonic()
    served = good_client(port, reference, patience_s)
    waited = time.monotonic() - t_good
    cuts = [s for s in slow if s.cut_s is not None]
    reasons = ", ".join(f"{sum(s.reason == r for s in cuts)} {r}" for r in sorted({s.reason for s in cuts}))
    latest = max((s.cut_s for s in cuts if s.reason != "ERR busy"), default=None)
    for s in slow:
        s.stop.set()
    for s in slow:
        s.join(timeout=5)
    served_s = "not served" if served.served_s != served.served_s else f"{served.served_s:.1f}"
    return (f"| {what} | {served.first_try} | {served_s} | {served.tries} | {served.equal} | "
            f"{len(cuts)} of {n} ({reasons or 'none'}) | "
            f"{'-' if latest is None else f'{latest:.0f}'} | {waited:.0f} |")


# ------------------------------------------------------------------ (b) many clients at once


def concurrent(port: int, references: dict, n: int, rounds: int) -> None:
    connects, sessions, equal, errors = [], [], 0, []
    for _ in range(rounds):
        barrier = threading.Barrier(n)
        out: list = [None] * n

        def one(i: int, barrier: threading.Barrier = barrier, out: list = out) -> None:
            path, chain = MIXED[i % len(MIXED)]
            barrier.wait()
            t0 = time.perf_counter()
            try:
                r = replay_remote(path, port=port, chain_name=chain, timeout_s=120)
                out[i] = (r.connect_s, time.perf_counter() - t0, same_images(r.images, references[path, chain]), "")
            except ReplayError as exc:
                out[i] = (None, time.perf_counter() - t0, False, str(exc))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c, s, e, err in out:
            if c is not None:
                connects.append(c)
            sessions.append(s)
            equal += e
            if err:
                errors.append(err)
    print(f"| {n} | {rounds} | {equal} of {n * rounds} | {len(errors)} | {_ms(connects, 50)} | {_ms(connects, 95)} | "
          f"{1000 * max(connects):.1f} | {sum(c >= 1.0 for c in connects)} | "
          f"{statistics.median(sessions):.2f} | {max(sessions):.2f} |")
    if errors:
        print(f"\nfirst error: {errors[0]}")


# ------------------------------------------------------------------ (c) a reset frees the CPU


def heavy_session(port: int, pid: int, payload: bytes, reset_after_cpu_s: float | None,
                  watch_s: float) -> str:
    """Send the heavy session whole; RST once the server has spent ``reset_after_cpu_s`` CPU
    seconds on it (None: read its answer to the end). One row of table (c).
    """
    c0, t0 = cpu_s(pid), time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=600)
    sock.sendall(payload)
    if reset_after_cpu_s is None:
        with sock, sock.makefile("rb") as rfile:
            reader = P.MessageReader(rfile)
            images = 0
            while (msg := reader.read()) is not None and not isinstance(msg, P.Close):
                images += isinstance(msg, ismrmrd.Image)
        return (f"| runs to its end ({images} images) | - | - | - | - | - | - | "
                f"{cpu_s(pid) - c0:.2f} CPU s in {time.monotonic() - t0:.1f} s |")
    while cpu_s(pid) - c0 < reset_after_cpu_s:
        time.sleep(0.02)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()   # RST
    t_reset, c_reset = time.monotonic(), cpu_s(pid)
    samples = [(0.0, 0.0)]
    while time.monotonic() - t_reset < watch_s:
        time.sleep(0.05)
        samples.append((time.monotonic() - t_reset, cpu_s(pid) - c_reset))

    def used(a: float, b: float) -> float:
        return max(c for t, c in samples if t <= b) - max(c for t, c in samples if t <= a)

    # the last 50 ms in which the server used more than 40 % of a core
    busy_until = max((t for (t, c), (_, c_prev) in zip(samples[1:], samples) if c - c_prev > 0.02), default=0.0)
    return (f"| RST | {t_reset - t0:.1f} | {c_reset - c0:.2f} | {used(0, 1):.2f} | {used(1, 2):.2f} | "
            f"{used(2, watch_s):.2f} (to {watch_s:g} s) | {busy_until:.2f} | "
            f"{c_reset - c0 + samples[-1][1]:.2f} CPU s |")


# ------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slow", type=int, default=40, help="clients trickling 1 byte/s (default 40)")
    ap.add_argument("--silent", type=int, default=32, help="connections sending nothing (default 32)")
    ap.add_argument("--patience", type=float, default=45.0,
                    help="seconds the good client keeps retrying a busy server (default 45)")
    ap.add_argument("--concurrent", type=int, default=16, help="clients at once in (b) (default 16)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (b) (default 3)")
    ap.add_argument("--heavy", default=HEAVY[1], help=f"chain for (c) on {HEAVY[0].name} (default {HEAVY[1]})")
    ap.add_argument("--watch", type=float, default=10.0, help="seconds (c) watches the CPU after a reset")
    ap.add_argument("--skip", default="", help="parts to skip, e.g. 'a' or 'ac'")
    args = ap.parse_args()
    references = {job: replay_in_process(*job).images for job in MIXED}
    with tempfile.TemporaryFile() as log:
        proc, port = start_server(log)
        try:
            print(f"cmrecon serve (defaults) on port {port}, pid {proc.pid}\n")
            if "a" not in args.skip:
                print("(a) the good client (psir_classic, sim_lge_r2_embedded) while others hold connections\n")
                print("| others | first try | served after (s) | tries | images equal | connections the server "
                      "answered or cut by then | last cut (s after connect) | waited (s) |\n"
                      "|---|---|---|---|---|---|---|---|")
                trickle = session_bytes(*GOOD)
                opening = len(P.encode(P.ConfigFile(f"{GOOD[1]}.xml"))) + len(P.encode(P.Header(read_header_xml(GOOD[0]))))
                print(crowd(port, references[GOOD], 0, b"", args.patience, "none"), flush=True)
                for n, payload, what, at_once in (
                        (args.slow, trickle, f"{args.slow} sending 1 byte/s", 0),
                        (args.slow, trickle, f"{args.slow} sending CONFIG and HEADER ({opening} B), then 1 byte/s", opening),
                        (args.silent, b"", f"{args.silent} silent", 0)):
                    if n:
                        print(crowd(port, references[GOOD], n, payload, args.patience, what, at_once), flush=True)
                        time.sleep(2.0)
            if "b" not in args.skip:
                print("\n(b) clients at once, each with its own stream and chain "
                      f"({', '.join(f'{c} on {p.stem}' for p, c in MIXED)})\n")
                print("| clients | rounds | images bitwise equal | errors | connect p50 (ms) | connect p95 (ms) | "
                      "connect max (ms) | connects ≥ 1 s | session p50 (s) | session max (s) |\n"
                      "|---|---|---|---|---|---|---|---|---|---|")
                concurrent(port, references, args.concurrent, args.rounds)
                sys.stdout.flush()
            if "c" not in args.skip:
                heavy = (HEAVY[0], args.heavy)
                print(f"\n(c) {heavy[1]} on {heavy[0].stem}, sent whole; the server's CPU seconds after the "
                      "client resets (RST)\n")
                print("| session | reset at (s into the session) | server CPU before it (s) | CPU 0-1 s after | "
                      "1-2 s after | later | busy until (s after the reset) | session total |\n"
                      "|---|---|---|---|---|---|---|---|")
                payload = session_bytes(*heavy)
                print(heavy_session(port, proc.pid, payload, None, args.watch), flush=True)
                for at in (0.5, 2.0):
                    print(heavy_session(port, proc.pid, payload, at, args.watch), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.seek(0)
            lines = log.read().decode(errors="replace").splitlines()
        failed = [x for x in lines if "session failed:" in x]   # once per session (its 'closed' line repeats it)
        count = {"busy refusals": sum("refused" in x for x in lines), "tracebacks": sum("Traceback" in x for x in lines)}
        count |= {what: sum(needle in x for x in failed) for what, needle in (
            ("rate cuts", "bytes/s"), ("header deadline cuts", "header-timeout"), ("idle cuts", "idle timeout"),
            ("deadline cuts", "--session-timeout"), ("internal errors", "internal server error"))}
        print(f"\nserver log: {len(lines)} lines; " + ", ".join(f"{n} {what}" for what, n in count.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
