"""``cmrecon serve fft_rss`` against a REAL Gadgetron 4.7.2 ``default.xml``: same client, same data.

What it measures: the wall clock of whole sessions of the stock ``gadgetron_ismrmrd_client``
(client start to exit: read the file, stream it, receive and write the images) against two
servers started once each and used in alternation (A, B, A, B, …) in one process:

* **cmrecon**: ``cmrecon serve`` (this interpreter's ``bin/``), chain chosen by the client's
  config name ``-c fft_rss.xml`` (noise prewhitening, identity without a noise scan; readout
  oversampling removal; centred inverse FFT; root sum of squares; one image per repetition);
* **gadgetron**: the C++ ``gadgetron`` with its own ``default.xml`` (RemoveROOversampling,
  AcquisitionAccumulateTrigger by repetition, BucketToBuffer, SimpleRecon (inverse FFT, RSS),
  ImageArraySplit, Extract (magnitude), ImageFinish; no Python).

The stream is ISMRMRD's ``ismrmrd_generate_cartesian_shepp_logan`` (256², 16 coils, 2x readout
oversampling, 20 repetitions: 5120 readouts, about 364 MB), generated once into ``--work``.
Per session it records the client's return code and wall seconds, the server's CPU seconds
(utime + stime of the server's whole process tree from ``/proc``, including the per-connection
children Gadgetron forks and reaps; a delta over the session) and the client's CPU seconds,
and counts the returned images. The images are compared across servers per repetition:
max |difference| over Gadgetron's peak, as returned and after a least-squares scale (the scale
is reported too), and each server's later runs against its first. The table gives per server the
median / min / max wall seconds, the median CPU seconds and the ratio cmrecon / Gadgetron of the
medians (the goal of the comparison: ≤ 1.0). Timings on a shared machine move with its load:
the load average at start and end is printed.

Prerequisite: a Gadgetron 4.7.2 (CPU) and ISMRMRD 1.15 built from source outside the repository
(docs/gadgetron.md says how): ``--gt`` is Gadgetron's install
prefix (``bin/gadgetron``, ``bin/gadgetron_ismrmrd_client``, ``share/gadgetron/config``),
``--ld-path`` the ISMRMRD ``lib`` folder (its ``../bin`` holds the data generator).

Run (with the project's virtual environment)::

    python bench/bench_vs_gadgetron.py --gt /work/scratch/gadgetron-install \\
        --ld-path /work/scratch/ismrmrd-install/lib --runs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from real_gadgetron import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- processes and /proc


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime + cutime + cstime in ticks) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()      # fields from 3 (state) on
    return int(rest[1]), sum(int(v) for v in rest[11:15])


def tree(pid: int) -> dict[int, int]:
    """Ticks of every live process in ``pid``'s tree (``pid`` included)."""
    info = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                info[int(name)] = st
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        if p in info:
            out[p] = info[p][1]
            todo.extend(c for c, (ppid, _) in info.items() if ppid == p)
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a server's process tree: live processes plus the children they reaped."""
    return sum(tree(pid).values()) / CLK_TCK


def listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (read from /proc/net/tcp*, no probe connection)."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def machine() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, Linux {platform.release()}"


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    argv: list[str]
    config: str                    # the client's -c value
    env: dict[str, str]
    log: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    runs: list[dict] = field(default_factory=list)

    def start(self, limit_s: float = 60.0) -> None:
        self._fh = open(self.log, "w")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start (rc {self.proc.returncode}); see {self.log}")
            if listening(self.port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} does not listen on port {self.port} after {limit_s:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)     # its own session: only its tree
                self.proc.wait()
        self._fh.close()

    def settle(self, children_before: int, limit_s: float = 10.0) -> None:
        """Wait until the per-connection work has left the tree (Gadgetron's forked child)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s and len(tree(self.proc.pid)) > children_before:
            time.sleep(0.05)


# ---------------------------------------------------------------- images


def read_out(path: Path) -> dict[tuple[int, int], np.ndarray]:
    """{(slice, repetition): float64 image (y, x)} of a client output file."""
    from cmrecon.io.mrdfile import read_images
    out = {}
    for series in read_images(path).values():
        for im in series:
            key = (int(im.slice), int(im.repetition))
            if key in out:
                raise ValueError(f"{path}: two images for slice/repetition {key}")
            out[key] = np.abs(np.asarray(im.data)).astype(np.float64).squeeze()
    return out


def compare(a: dict, b: dict) -> dict:
    """Images a against b (the reference): worst max|a-b|/max|b| as is and after scaling a by s (least squares)."""
    keys = sorted(set(a) & set(b))
    res = {"common": len(keys), "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a)),
           "raw": 0.0, "scaled": 0.0, "scales": [], "shape": None}
    for k in keys:
        x, y = a[k], b[k]
        if x.shape != y.shape:
            res["shape"] = f"{x.shape} vs {y.shape}"
            return res
        peak = float(np.abs(y).max()) or 1.0
        s = float(np.vdot(x, y).real / (np.vdot(x, x).real or 1.0))
        res["scales"].append(s)
        res["raw"] = max(res["raw"], float(np.abs(x - y).max()) / peak)
        res["scaled"] = max(res["scaled"], float(np.abs(s * x - y).max()) / peak)
    return res


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, required=True, help="Gadgetron install prefix")
    ap.add_argument("--ld-path", default="", help="ISMRMRD's lib folder (LD_LIBRARY_PATH for Gadgetron and the client)")
    ap.add_argument("--client", type=Path, default=None, help="gadgetron_ismrmrd_client (default: GT/bin)")
    ap.add_argument("--generator", type=Path, default=None,
                    help="ismrmrd_generate_cartesian_shepp_logan (default: LD_PATH/../bin, then GT/bin)")
    ap.add_argument("--cmrecon", type=Path, default=Path(sys.executable).parent / "cmrecon",
                    help="the cmrecon entry point (default: this interpreter's bin/)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/cmrecon-bench-vs-gadgetron"),
                    help="folder for the cached stream, logs and output files")
    ap.add_argument("--runs", type=int, default=5, help="sessions per server (alternating)")
    ap.add_argument("--matrix", type=int, default=256)
    ap.add_argument("--coils", type=int, default=16)
    ap.add_argument("--repetitions", type=int, default=20)
    ap.add_argument("--chain", default="fft_rss.xml", help="our server's config name (-c)")
    ap.add_argument("--gt-config", default="default.xml", help="Gadgetron's config name (-c)")
    ap.add_argument("--first", choices=("cmrecon", "gadgetron"), default="cmrecon")
    ap.add_argument("--session-timeout", type=float, default=900.0)
    ap.add_argument("--keep", action="store_true", help="keep the client's output files")
    args = ap.parse_args()

    load0 = os.getloadavg()
    client = args.client or args.gt / "bin" / "gadgetron_ismrmrd_client"
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ld = ":".join(p for p in (args.ld_path, str(args.gt / "lib"), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    # as bench/real_gadgetron.py: this interpreter's bin/ first on PATH (externals' python), then GT's
    gt_env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{args.gt / 'bin'}:{os.environ.get('PATH', '')}",
                  LD_LIBRARY_PATH=ld, OMP_WAIT_POLICY="PASSIVE")
    client_env = dict(os.environ, LD_LIBRARY_PATH=ld)

    # ---- the stream, cached
    data = work / f"shepp_logan_{args.matrix}_{args.coils}c_{args.repetitions}r.h5"
    if not data.exists():
        gen = args.generator
        if gen is None:
            cands = [Path(args.ld_path).parent / "bin" / "ismrmrd_generate_cartesian_shepp_logan"] if args.ld_path else []
            cands.append(args.gt / "bin" / "ismrmrd_generate_cartesian_shepp_logan")
            gen = next((c for c in cands if c.exists()), cands[0])
        tmp = data.with_suffix(".part.h5")
        tmp.unlink(missing_ok=True)
        print(f"generating {data.name} with {gen} …", file=sys.stderr, flush=True)
        subprocess.run([str(gen), "-m", str(args.matrix), "-c", str(args.coils), "-r", str(args.repetitions),
                        "-O", "2", "-o", str(tmp)], env=client_env, check=True, capture_output=True)
        tmp.rename(data)
    size_mb = data.stat().st_size / 1e6

    servers = {
        "cmrecon": Server("cmrecon", [], args.chain, dict(os.environ), work / "cmrecon.log"),
        "gadgetron": Server("gadgetron", [], args.gt_config, gt_env, work / "gadgetron.log"),
    }
    for s in servers.values():
        s.port = free_port()
    servers["cmrecon"].argv = [str(args.cmrecon), "serve", "-p", str(servers["cmrecon"].port)]
    gt_dir = work / "gadgetron-workdir"
    gt_dir.mkdir(exist_ok=True)
    servers["gadgetron"].argv = [str(args.gt / "bin" / "gadgetron"), "-p", str(servers["gadgetron"].port),
                                 "--disable_storage", "true", "-W", str(gt_dir)]
    order = ["cmrecon", "gadgetron"] if args.first == "cmrecon" else ["gadgetron", "cmrecon"]
    first_images: dict[str, dict] = {}
    drift = {name: 0.0 for name in servers}            # later runs vs the first, per server
    try:
        for s in servers.values():
            s.start()
        for i in range(args.runs):
            for name in order:
                s = servers[name]
                out = work / f"out_{name}_{i}.h5"
                out.unlink(missing_ok=True)
                before = tree(s.proc.pid)
                cpu0 = sum(before.values()) / CLK_TCK
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                run = subprocess.run([str(client), "-a", "127.0.0.1", "-p", str(s.port), "-f", str(data),
                                      "-c", s.config, "-o", str(out)], env=client_env, capture_output=True,
                                     text=True, timeout=args.session_timeout)
                wall = time.perf_counter() - t0
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                s.settle(len(before))
                cpu = tree_cpu_s(s.proc.pid) - cpu0
                rec = {"rc": run.returncode, "wall": wall, "cpu": cpu,
                       "client_cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
                       "images": 0, "note": ""}
                if run.returncode != 0:
                    rec["note"] = ((run.stdout + run.stderr).strip().splitlines() or ["no output"])[-1]
                if out.exists():
                    try:
                        imgs = read_out(out)
                        rec["images"] = len(imgs)
                        if name not in first_images:
                            first_images[name] = imgs
                        else:
                            d = compare(imgs, first_images[name])
                            drift[name] = max(drift[name], d["raw"] if d["shape"] is None else float("inf"))
                    except Exception as exc:       # reported, not fatal
                        rec["note"] = f"output unreadable: {exc}"
                    if not args.keep:
                        out.unlink()
                s.runs.append(rec)
                print(f"run {i} {name}: rc {rec['rc']} wall {wall:.2f} s server CPU {cpu:.2f} s "
                      f"client CPU {rec['client_cpu']:.2f} s images {rec['images']} {rec['note']}",
                      file=sys.stderr, flush=True)
    finally:
        for s in servers.values():
            s.stop()
    load1 = os.getloadavg()

    # ---- report
    print(f"\nmachine: {machine()}; load average {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} at start, "
          f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} at end")
    print(f"data: {data.name}, {size_mb:.0f} MB: ISMRMRD Shepp-Logan {args.matrix}² ({2 * args.matrix} readout "
          f"samples, 2x oversampling), {args.coils} coils, {args.repetitions} repetitions, "
          f"{args.matrix * args.repetitions} readouts; client {client.name}, {args.runs} alternating sessions "
          f"per server ({' / '.join(order)} first)\n")
    print("| server | config | sessions ok | images/session | median s | min s | max s | median server CPU s "
          "| server CPU / wall | median client CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    med = {}
    for name, s in servers.items():
        ok = [r for r in s.runs if r["rc"] == 0]
        walls = [r["wall"] for r in ok] or [float("nan")]
        cpus = [r["cpu"] for r in ok] or [float("nan")]
        med[name] = float(np.median(walls))
        counts = sorted({r["images"] for r in s.runs})
        print(f"| {name} | {s.config} | {len(ok)}/{len(s.runs)} | {', '.join(map(str, counts))} | {med[name]:.2f} "
              f"| {min(walls):.2f} | {max(walls):.2f} | {np.median(cpus):.2f} | {np.median(cpus) / med[name]:.2f} "
              f"| {np.median([r['client_cpu'] for r in ok] or [float('nan')]):.2f} |")
    print(f"\nratio cmrecon / Gadgetron (medians): **{med['cmrecon'] / med['gadgetron']:.2f}** (goal ≤ 1.0)")
    for name, s in servers.items():
        walls = ", ".join(f"{r['wall']:.2f}" for r in s.runs)
        cpus = ", ".join(f"{r['cpu']:.2f}" for r in s.runs)
        print(f"{name} per run (in order): wall s {walls}; server CPU s {cpus}")
        for r in s.runs:
            if r["note"]:
                print(f"  {name}: {r['note']}")
    if len(first_images) == 2:
        c = compare(first_images["cmrecon"], first_images["gadgetron"])
        if c["shape"]:
            print(f"\nimages: shapes differ, cmrecon {c['shape']} Gadgetron")
        else:
            sc = np.array(c["scales"]) if c["scales"] else np.array([np.nan])
            print(f"\nimages (first run each, {c['common']} repetitions in common, {c['only_a']} only cmrecon, "
                  f"{c['only_b']} only Gadgetron): max |cmrecon - Gadgetron| / Gadgetron peak {c['raw']:.2e} as "
                  f"returned; {c['scaled']:.2e} after scaling cmrecon by s (least squares; s median {np.median(sc):.6g}, "
                  f"range {sc.min():.6g}–{sc.max():.6g})")
    print(f"images, later runs vs the first (max |diff| / peak): cmrecon {drift['cmrecon']:.1e}, "
          f"Gadgetron {drift['gadgetron']:.1e}")
    print(f"logs: {work}")
    return 0 if all(r["rc"] == 0 for s in servers.values() for r in s.runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
