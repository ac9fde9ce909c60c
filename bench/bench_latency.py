"""Latency per chain: a slice's last readout sent by the client → its image read by the client.

    python bench/bench_latency.py [--chains psir_classic,psir_moco,psirnet_lge,psir_refine,fft_rss]
                                  [--slices 4] [--slice-seconds 3] [--throughput 1,4,16] [--repeats 1]

Data, simulated here: the LGE chains get ``cmrecon.sim.lge`` slices (LgeParams defaults: 16 coils,
128×96, 2× readout oversampling, 8 IR/PD repeats, R = 2, 24 embedded ACS lines; seed 0; four slices
simulated once and repeated with new slice numbers for more); ``fft_rss`` gets
bench_server's stream (16 coils, 256 samples, 128 lines per slice).

Latency table: the client sends like a scanner, each slice's readouts spread evenly over
``--slice-seconds`` (the noise scan at once), and notes when it sent each slice's last readout
and when it read that slice's first PSIR image (``fft_rss``: its image). Server: ``cmrecon serve``
in its own process (one BLAS and one torch thread, as deployed), warmed up by a one-slice session
first (imports, model loading). Peer: the same paced stream through ``run_chain`` in this process
(last readout pulled by the chain → image yielded); the runs alternate. Median and max over
slices (and repeats). ``psirnet_lge`` holds ``batch_slices`` = 4 slices per forward pass by
default, so a slice's image waits for the next three slices; it is also run with
``psirnet_recon.batch_slices`` = 1 sent as the session's parameter JSON.

Throughput table: the client sends as fast as the server takes it (1, 4, 16 slices), a fresh
server process per run, warmed up by one slice; seconds per slice and the server's peak RSS during
the run (``/proc/PID/clear_refs`` resets the peak after the warm-up), against in-process seconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

import ismrmrd
import numpy as np
from bench_server import header_xml as fft_header
from bench_server import readouts as fft_readouts
from bench_server import serve_process

from cmrecon.chain.definition import resolve
from cmrecon.chain.runner import run_chain
from cmrecon.chain.ui_params import apply_parameters
from cmrecon.io import protocol as P
from cmrecon.runtime import Settings, configure

GOALS_S = {"psir_classic": 0.3, "psirnet_lge": 0.6}
BATCH1 = "psirnet_lge (batch_slices 1)"
SIMULATED = 4   # distinct LGE slices simulated; more are these repeated with new slice numbers


@dataclass
class Stream:
    """One session's input: header, the readouts before the first slice, and each slice's."""

    header: bytes
    prelude: list
    slices: list[list] = field(default_factory=list)


def _relabel(acq: ismrmrd.Acquisition, new_slice: int) -> ismrmrd.Acquisition:
    head = acq.getHead()
    head.idx.slice = new_slice
    return ismrmrd.Acquisition(head, acq.data, acq.traj)


class Data:
    """Simulated streams, made once per process and cut to the number of slices asked for."""

    def __init__(self) -> None:
        self._lge = None

    def lge(self, n: int) -> Stream:
        if self._lge is None:
            from cmrecon.sim.lge import LgeParams, simulate_lge
            t0 = time.perf_counter()
            case = simulate_lge(LgeParams(slices=SIMULATED, seed=0))
            print(f"simulated {SIMULATED} LGE slices in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            self._lge = case
        case = self._lge
        prelude = [a for a in case.items if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
        by_slice = [[a for a in case.items if a.idx.slice == s and not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
                    for s in range(SIMULATED)]
        slices = [[_relabel(a, s) if s >= SIMULATED else a for a in by_slice[s % SIMULATED]] for s in range(n)]
        header, k = re.subn(r"(<slice>\s*<minimum>0</minimum>\s*<maximum>)\d+(</maximum>)",
                            rf"\g<1>{max(n, SIMULATED) - 1}\g<2>", case.header_xml)
        if k != 1:
            raise SystemExit("bench: could not rewrite the slice limit of the simulated header")
        return Stream(header.encode(), prelude, slices)

    def fft(self, n: int) -> Stream:
        items = fft_readouts(n, np.random.default_rng(0))
        prelude = [a for a in items if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
        slices = [[a for a in items if a.idx.slice == s and not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
                  for s in range(n)]
        return Stream(fft_header(n).encode(), prelude, slices)

    def stream(self, chain: str, n: int) -> Stream:
        out = self.fft(n) if chain == "fft_rss" else self.lge(n)
        gc.collect()
        gc.freeze()   # the simulated data are not garbage: in-process runs should not scan them
        return out


def chain_and_params(variant: str) -> tuple[str, dict]:
    if variant == BATCH1:
        return "psirnet_lge", {"psirnet_recon.batch_slices": 1}
    return variant, {}


def _is_the_image(img: ismrmrd.Image, chain: str) -> bool:
    if chain == "fft_rss":
        return True
    roles = img.meta.get("DataRole")
    return "PSIR" in (roles if isinstance(roles, list) else [roles])


def _paced(items: list, seconds: float):
    """``items`` at an even pace over ``seconds`` (0: at once), counted from the first."""
    t0 = time.perf_counter()
    for j, item in enumerate(items):
        if seconds:
            wait = t0 + seconds * (j + 1) / len(items) - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        yield item


@dataclass
class Run:
    """What one session measured: send time of each slice's last readout, arrival of its image."""

    sent: dict[int, float] = field(default_factory=dict)
    image: dict[int, float] = field(default_factory=dict)
    t0: float = 0.0
    t_end: float = 0.0
    images: int = 0

    def latencies(self) -> list[float]:
        return [self.image[s] - self.sent[s] for s in sorted(self.sent) if s in self.image]


def remote(port: int, variant: str, data: Stream, pace_s: float) -> Run:
    """One session to the server; the client sends on a thread and reads here."""
    chain, params = chain_and_params(variant)
    run = Run(t0=time.perf_counter())
    sock = socket.create_connection(("127.0.0.1", port), timeout=600)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    failed: list[BaseException] = []

    def send() -> None:
        try:
            first = [P.ConfigFile(chain), P.Header(data.header)]
            if params:
                first.append(P.Text(json.dumps({"parameters": params})))
            sock.sendall(b"".join(P.encode(m) for m in first + data.prelude))
            for s, items in enumerate(data.slices):
                for item in _paced(items, pace_s):
                    sock.sendall(P.encode(item))
                run.sent[s] = time.perf_counter()
            sock.sendall(P.encode(P.Close()))
        except OSError as exc:
            failed.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    f = sock.makefile("rb")
    reader = P.MessageReader(f)
    while (msg := reader.read()) is not None and not isinstance(msg, P.Close):
        if isinstance(msg, ismrmrd.Image):
            run.images += 1
            if msg.slice not in run.image and _is_the_image(msg, chain):
                run.image[msg.slice] = time.perf_counter()
        elif isinstance(msg, P.Text) and msg.text.startswith("ERR"):
            raise SystemExit(f"bench: {variant}: the server says {msg.text}")
    run.t_end = time.perf_counter()
    sender.join()
    f.close()
    sock.close()
    if failed:
        raise SystemExit(f"bench: {variant}: sending failed: {failed[0]}")
    return run


def in_process(variant: str, data: Stream, pace_s: float) -> Run:
    """The same paced stream through ``run_chain`` here: last readout pulled → image yielded."""
    chain_name, params = chain_and_params(variant)
    chain = apply_parameters(resolve(chain_name), params) if params else resolve(chain_name)
    run = Run(t0=time.perf_counter())

    def source():
        yield from data.prelude
        for s, items in enumerate(data.slices):
            last = len(items) - 1
            for j, item in enumerate(_paced(items, pace_s)):
                if j == last:
                    run.sent[s] = time.perf_counter()
                yield item

    for item in run_chain(chain, data.header, source()):
        if isinstance(item, ismrmrd.Image):
            run.images += 1
            if item.slice not in run.image and _is_the_image(item, chain_name):
                run.image[item.slice] = time.perf_counter()
    run.t_end = time.perf_counter()
    return run


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def latency_table(variants: list[str], data: Data, slices: int, pace_s: float, repeats: int) -> None:
    rows = []
    for variant in variants:
        stream = data.stream(chain_and_params(variant)[0], slices)
        warm = Stream(stream.header, stream.prelude, stream.slices[:1])
        with serve_process() as (port, _pid):
            remote(port, variant, warm, 0.0)
            in_process(variant, warm, 0.0)
            srv, loc = [], []
            for _ in range(repeats):
                srv += remote(port, variant, stream, pace_s).latencies()
                loc += in_process(variant, stream, pace_s).latencies()
        if len(srv) != slices * repeats or len(loc) != slices * repeats:
            raise SystemExit(f"bench: {variant}: images for {len(srv)} / {len(loc)} of {slices * repeats} slices")
        rows.append((variant, statistics.median(srv), max(srv), statistics.median(loc), max(loc)))
        print(f"  {variant}: server {statistics.median(srv):.3f} s, in-process {statistics.median(loc):.3f} s",
              file=sys.stderr)
    print(f"\n## Latency: a slice's last readout → its image at the client ({slices} slices x {repeats}, "
          f"readouts paced over {pace_s:g} s per slice; seconds)\n")
    print("| chain | server median | server max | in-process median | in-process max | ratio (medians) | goal |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for variant, sm, sx, lm, lx in rows:
        goal = GOALS_S.get(chain_and_params(variant)[0]) if variant != "psirnet_lge" else None
        goal = GOALS_S.get("psirnet_lge") if variant in ("psirnet_lge", BATCH1) else goal
        print(f"| {variant} | {sm:.3f} | {sx:.3f} | {lm:.3f} | {lx:.3f} | {sm / lm:.2f} | "
              f"{f'≤ {goal:g}' if goal else '–'} |")


def throughput_table(variants: list[str], data: Data, counts: list[int]) -> None:
    rows = []
    for variant in variants:
        chain = chain_and_params(variant)[0]
        for n in counts:
            stream = data.stream(chain, n)
            warm = Stream(stream.header, stream.prelude, stream.slices[:1])
            with serve_process() as (port, pid):
                remote(port, variant, warm, 0.0)
                base = _status_kib(pid, "VmRSS")
                reset = _reset_peak(pid)
                run = remote(port, variant, stream, 0.0)
                peak = _status_kib(pid, "VmHWM")
            local = in_process(variant, stream, 0.0)
            rows.append((variant, n, (run.t_end - run.t0) / n, (local.t_end - local.t0) / n, base / 1024,
                         peak / 1024, reset))
            print(f"  {variant} {n} slices: {(run.t_end - run.t0) / n:.3f} s/slice, peak RSS {peak / 1024:.0f} MiB",
                  file=sys.stderr)
    print("\n## Throughput: slices sent as fast as the server takes them (fresh server per run, warmed up "
          "by one slice)\n")
    print("| chain | slices | server s/slice | in-process s/slice | ratio | server RSS before, MiB | "
          "server peak RSS in the run, MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for variant, n, ts, tl, base, peak, reset in rows:
        print(f"| {variant} | {n} | {ts:.3f} | {tl:.3f} | {ts / tl:.2f} | {base:.0f} | "
              f"{peak:.0f}{'' if reset else ' (process peak: clear_refs refused)'} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", default="psir_classic,psir_moco,psirnet_lge,psir_refine,fft_rss")
    ap.add_argument("--slices", type=int, default=4, help="slices per latency session")
    ap.add_argument("--slice-seconds", type=float, default=3.0,
                    help="seconds over which each slice's readouts are sent (a scanner takes ~16)")
    ap.add_argument("--repeats", type=int, default=1, help="latency sessions per chain")
    ap.add_argument("--throughput", default="1,4,16", help="slice counts of the throughput table ('' = none)")
    args = ap.parse_args()
    settings = configure(Settings.build())   # as cmrecon's main does: one BLAS thread, one torch thread
    # The policy's torch threads for this thread, the in-process peer's, now: applied later on a
    # model-loading thread, this thread was seen running the learned chains on 2.
    import torch
    torch.set_num_threads(settings.torch_threads)
    variants = [c for c in args.chains.split(",") if c]
    if "psirnet_lge" in variants:
        variants.insert(variants.index("psirnet_lge") + 1, BATCH1)
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}", file=sys.stderr)
    data = Data()
    latency_table(variants, data, args.slices, args.slice_seconds, args.repeats)
    counts = [int(c) for c in args.throughput.split(",") if c]
    if counts:
        throughput_table([v for v in variants if v != BATCH1], data, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
