"""Ingest throughput of the MRD stream path and end-to-end fft_rss time per slice.

Stream: 16 coils, 256 samples per readout (2x oversampled 128 matrix), 128 lines per slice.
Peer: the same bytes decoded by a minimal loop over the `ismrmrd` package's own
ProtocolDeserializer, in the same process (ratio = ours / peer throughput).

Run:  .venv/bin/python bench/bench_server.py [--slices 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
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
from cmrecon.server.client import replay_in_process, replay_remote
from cmrecon.server.tcp import MrdServer

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
    decode(conn.makefile("rb"))
    dt = time.perf_counter() - t0
    conn.close()
    srv.close()
    t.join()
    return dt


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    hdr = header_xml(args.slices)
    acqs = readouts(args.slices, rng)
    buf = io.BytesIO()
    w = P.MessageWriter(buf)
    for a in acqs:
        w.write(a)
    w.write(P.Close())
    payload = buf.getvalue()
    n, mb = len(acqs), len(payload) / 2**20
    print(f"stream: {n} readouts, {COILS} coils x {SAMPLES} samples, {mb:.1f} MB; median of {args.repeats}",
          file=sys.stderr)
    rows = []
    for label, fn in [("decode in memory", lambda d: (lambda: d(io.BytesIO(payload)))),
                      ("decode over loopback TCP", None)]:
        if fn is not None:
            ours = median_time(fn(decode_ours), args.repeats)
            peer = median_time(fn(decode_ismrmrd), args.repeats)
        else:
            ours = statistics.median(over_loopback(payload, decode_ours) for _ in range(args.repeats))
            peer = statistics.median(over_loopback(payload, decode_ismrmrd) for _ in range(args.repeats))
        rows.append((label, n / ours, mb / ours, n / peer, mb / peer, peer / ours))
    print("\n## Ingest throughput (readouts/s, MB/s; ratio = ours / ismrmrd ProtocolDeserializer)\n")
    print("| path | ours readouts/s | ours MB/s | ismrmrd readouts/s | ismrmrd MB/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,.0f} | {r[2]:,.0f} | {r[3]:,.0f} | {r[4]:,.0f} | {r[5]:.2f} |")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        write_dataset(path, hdr, acqs)
        server = MrdServer("127.0.0.1", 0)
        server.start_background()
        try:
            t_local = median_time(lambda: replay_in_process(path, "fft_rss"), args.repeats)
            t_remote = median_time(lambda: replay_remote(path, port=server.port, chain_name="fft_rss"), args.repeats)
        finally:
            server.shutdown()
            server.server_close()
    print(f"\n## fft_rss end to end ({args.slices} slices, {LINES} lines, {COILS} coils; file read included)\n")
    print("| path | s per slice | slices/s | ratio to in-process |")
    print("|---|---:|---:|---:|")
    for label, t in (("in-process", t_local), ("loopback server", t_remote)):
        print(f"| {label} | {t / args.slices:.4f} | {args.slices / t:.1f} | {t / t_local:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
