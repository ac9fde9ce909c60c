"""Ingest throughput of the MRD stream path and end-to-end fft_rss time per slice.

Stream: 16 coils, 256 samples per readout (2x oversampled 128 matrix), 128 lines per slice.
Peer: the same bytes decoded by a minimal loop over the `ismrmrd` package's own
ProtocolDeserializer, in the same process (ratio = ours / peer throughput); over loopback ours
reads through the server's SocketStream. End to end: `cmrecon replay` in-process against the same
replay to a server in a thread of this process and to a `cmrecon serve` process; runs alternate.
One BLAS thread, as `cmrecon` sets it.

Run:  .venv/bin/python bench/bench_server.py [--slices 8] [--repeats 7]   (ingest: 3 x repeats runs)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ismrmrd
import ismrmrd.serialization as S
import ismrmrd.xsd as X
import numpy as np

from cmrecon.io import protocol as P
from cmrecon.io.mrdfile import write_dataset
from cmrecon.runtime import Settings, configure
from cmrecon.server.client import replay_in_process, replay_remote
from cmrecon.server.tcp import MrdServer, SocketStream

COILS, SAMPLES, LINES = 16, 256, 128


def header_xml(slices: int) -> str:
    enc = X.encodingType(
        trajectory=X.trajectoryType.CARTESIAN,
        encodedSpace=X.encodingSpaceType(matrixSize=X.matrixSizeType(x=SAMPLES, y=LINES, z=1),
                                         fieldOfView_mm=X.fieldOfViewMm(x=700.0, y=350.0, z=8.0)),
        reconSpace=X.encodingSpaceType(matrixSize=X.matrixSizeType(x=SAMPLES // 2, y=LINES, z=1),
                                       fieldOfView_mm=X.fieldOfViewMm(x=350.0, y=350.0, z=8.0)),
        encodingLimits=X.encodingLimitsType(
            kspace_encoding_step_1=X.limitType(minimum=0, maximum=LINES - 1, center=LINES // 2),
            slice=X.limitType(minimum=0, maximum=slices - 1, center=0)))
    return X.ismrmrdHeader(experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
                           encoding=[enc]).toXML()


def readouts(slices: int, rng: np.random.Generator) -> list[ismrmrd.Acquisition]:
    out = []
    def noise() -> np.ndarray:
        return (rng.normal(size=(COILS, SAMPLES)) + 1j * rng.normal(size=(COILS, SAMPLES))).astype(np.complex64)

    for _ in range(64):
        a = ismrmrd.Acquisition.from_array(noise())
        a.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        out.append(a)
    for s in range(slices):
        for line in range(LINES):
            a = ismrmrd.Acquisition.from_array(noise())
            a.idx.kspace_encode_step_1, a.idx.slice, a.center_sample = line, s, SAMPLES // 2
            if line == LINES - 1:
                a.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
            out.append(a)
    return out


def decode_ours(stream) -> int:
    r, n = P.MessageReader(stream), 0
    while (m := r.read()) is not None and not isinstance(m, P.Close):
        n += 1
    return n


def decode_ismrmrd(stream) -> int:
    n = 0
    for _ in S.ProtocolDeserializer(stream).deserialize():
        n += 1
    return n


def over_loopback(payload: bytes, decode) -> float:
    """Seconds to receive and decode ``payload`` sent by a thread over a loopback socket.

    Ours reads through the server's own :class:`SocketStream`; ismrmrd's through ``makefile``.
    """
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    def send() -> None:
        with socket.create_connection(srv.getsockname()) as s:
            s.sendall(payload)

    t = threading.Thread(target=send, daemon=True)
    t0 = time.perf_counter()
    t.start()
    conn, _ = srv.accept()
    stream = SocketStream(conn, 60.0) if decode is decode_ours else conn.makefile("rb")
    decode(stream)
    dt = time.perf_counter() - t0
    if decode is not decode_ours:
        stream.close()
    conn.close()
    srv.close()
    t.join()
    return dt


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(runs: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each named run, the runs taking turns ``repeats`` times."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


@contextlib.contextmanager
def serve_process(*extra: str):
    """``cmrecon serve --port 0`` in its own process (as deployed); yields ``(port, pid)``."""
    proc = subprocess.Popen([sys.executable, "-m", "cmrecon.cli", "--log-level", "WARNING", "serve", "--port", "0",
                             *extra], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        match = re.search(r"listening on [^:]+:(\d+)", line)
        if not match:
            raise RuntimeError(f"cmrecon serve did not start: {line}{proc.stderr.read()}")
        threading.Thread(target=proc.stderr.read, daemon=True).start()   # keep its log flowing
        yield int(match.group(1)), proc.pid
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stderr.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    configure(Settings.build())   # as cmrecon's main does: one BLAS thread (OpenBLAS spinning made
    #                               prewhitening 10x slower when the client's threads share the cores)
    rng = np.random.default_rng(0)
    hdr = header_xml(args.slices)
    acqs = readouts(args.slices, rng)
    payload = b"".join(P.encode(a) for a in acqs) + P.encode(P.Close())
    n, mb = len(acqs), len(payload) / 2**20
    print(f"stream: {n} readouts, {COILS} coils x {SAMPLES} samples, {mb:.1f} MB; median of {3 * args.repeats} "
          f"(ingest) and {args.repeats} (end to end) runs, alternating; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}", file=sys.stderr)
    ingest_repeats = 3 * args.repeats   # a decode takes ~0.05 s: more runs, a steadier median
    mem = alternate({"ours": lambda: decode_ours(io.BytesIO(payload)),
                     "ismrmrd": lambda: decode_ismrmrd(io.BytesIO(payload))}, ingest_repeats)
    tcp = {k: [] for k in ("ours", "ismrmrd")}
    for _ in range(ingest_repeats):
        tcp["ours"].append(over_loopback(payload, decode_ours))
        tcp["ismrmrd"].append(over_loopback(payload, decode_ismrmrd))
    tcp = {k: statistics.median(v) for k, v in tcp.items()}
    print("\n## Ingest throughput (readouts/s, MB/s; ratio = ours / ismrmrd ProtocolDeserializer)\n")
    print("| path | ours readouts/s | ours MB/s | ismrmrd readouts/s | ismrmrd MB/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, t in (("decode in memory", mem), ("decode over loopback TCP", tcp)):
        ours, peer = t["ours"], t["ismrmrd"]
        print(f"| {label} | {n / ours:,.0f} | {mb / ours:,.0f} | {n / peer:,.0f} | {mb / peer:,.0f} | {peer / ours:.2f} |")

    with tempfile.TemporaryDirectory() as tmp, serve_process() as (port, _):
        path = Path(tmp) / "bench.h5"
        write_dataset(path, hdr, acqs)
        server = MrdServer("127.0.0.1", 0)
        server.start_background()
        try:
            t = alternate({"in-process": lambda: replay_in_process(path, "fft_rss"),
                           "loopback server, a thread of this process":
                               lambda: replay_remote(path, port=server.port, chain_name="fft_rss"),
                           "loopback server, `cmrecon serve` process":
                               lambda: replay_remote(path, port=port, chain_name="fft_rss")}, args.repeats)
        finally:
            server.shutdown()
            server.server_close()
    print(f"\n## fft_rss end to end ({args.slices} slices, {LINES} lines, {COILS} coils; file read included)\n")
    print("| path | s per slice | slices/s | ratio to in-process |")
    print("|---|---:|---:|---:|")
    for label, dt in t.items():
        print(f"| {label} | {dt / args.slices:.4f} | {args.slices / dt:.1f} | {dt / t['in-process']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
