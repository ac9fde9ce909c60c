"""Every chain through a REAL Gadgetron and its stock client (a check outside CI).

Needs a Gadgetron 4.x install (``--gt``, the folder with ``bin/gadgetron`` and
``share/gadgetron/config``), ``gadgetron_ismrmrd_client`` and the ISMRMRD libraries they were
built with (``--ld-path``); docs/gadgetron.md says how one was built here. The script:

1. installs every chain into Gadgetron's config folder with ``cmrecon gadgetron install`` (so
   the client selects a chain by name, as a scanner console does);
2. starts ``gadgetron`` on a free loopback port with this interpreter's ``bin/`` first on PATH
   (Gadgetron starts externals with the first ``python`` there; it needs ``cmrecon_gadgets`` and
   the ``gadgetron`` package);
3. streams a recorded stream through every chain twice with the client's DEFAULT options
   (``--timeout`` 10 s): by name (``-c NAME.xml``) and inline (``-C chains/NAME.xml``);
4. compares the returned images with ``cmrecon replay --in-process`` (max |difference| over
   the image's peak; headers' image_index/slice/series);
5. aborts one session mid-stream (client killed) and, at the end, stops the server: after
   each, no ``python -m gadgetron … cmrecon_gadgets`` process may remain.

Run::

    python bench/real_gadgetron.py --gt /work/scratch/gadgetron-install \\
        --ld-path /work/scratch/ismrmrd-install/lib
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
#: chain → recorded stream it is checked on
STREAMS = {"fft_rss": "sim_lge_full.h5", "passthrough": "sim_lge_full.h5",
           "psir_classic": "sim_lge_r2_embedded.h5", "psir_moco": "sim_lge_r2_embedded.h5",
           "psir_average": "sim_lge_r2_embedded.h5", "psirnet_lge": "sim_lge_r2_embedded.h5",
           "psir_refine": "sim_lge_r2_embedded.h5"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def externals(python: str = sys.executable) -> list[int]:
    """PIDs of running ``python -m gadgetron <port> cmrecon_gadgets …`` processes of this interpreter.

    Read from /proc: the command line (split at NUL) holds ``-m gadgetron PORT cmrecon_gadgets``
    and the executable is this interpreter's (``/proc/PID/exe`` against ``python``'s real path;
    Gadgetron starts the first ``python`` on PATH, here this venv's, so the process's own argv[0]
    is only "python"). An earlier ``pgrep -f "-m gadgetron …"`` took the pattern's leading ``-m``
    for an option (procps-ng 4: "invalid option", no output), so that check found nothing.
    """
    want = os.path.realpath(python)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")]
            exe = os.path.realpath(entry / "exe")
        except OSError:
            continue
        if exe != want:
            continue
        for i in range(len(args) - 3):
            if args[i:i + 2] == ["-m", "gadgetron"] and args[i + 2].isdigit() and args[i + 3] == "cmrecon_gadgets":
                found.append(int(entry.name))
                break
    return found


def wait_no_externals(limit_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if not externals():
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def compare(out_h5: Path, chain: str, stream: Path) -> str:
    """Max relative difference of the client's images against the in-process replay."""
    from cmrecon.io.mrdfile import read_images
    from cmrecon.server.client import replay_in_process
    want = replay_in_process(stream, chain).images
    if not want:
        return "no images expected (the chain returns readouts)"
    got = [im for series in read_images(out_h5).values() for im in series]
    if len(got) != len(want):
        return f"{len(got)} images, in-process {len(want)}"
    key = lambda im: (im.image_series_index, im.slice, im.image_index)  # noqa: E731
    worst = 0.0
    for a, b in zip(sorted(got, key=key), sorted(want, key=key)):
        if key(a) != key(b):
            return f"image {key(a)} vs in-process {key(b)}"
        peak = float(np.abs(b.data).max()) or 1.0
        worst = max(worst, float(np.abs(a.data.astype(np.float64) - b.data.astype(np.float64)).max()) / peak)
    return f"{len(got)} images, max |diff|/peak {worst:.1e}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, required=True, help="Gadgetron install prefix")
    ap.add_argument("--ld-path", default="", help="extra LD_LIBRARY_PATH (ISMRMRD's lib folder)")
    ap.add_argument("--client", type=Path, default=None, help="gadgetron_ismrmrd_client (default: GT/bin)")
    ap.add_argument("--chains", nargs="*", default=list(STREAMS))
    ap.add_argument("--repeat", type=int, default=1, help="sessions per chain and client mode")
    ap.add_argument("--peer-data", type=Path, default=None,
                    help="a dataset for Gadgetron's own default.xml (e.g. from "
                         "ismrmrd_generate_cartesian_shepp_logan), run --repeat times as the peer")
    args = ap.parse_args()
    client = args.client or args.gt / "bin" / "gadgetron_ismrmrd_client"
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{args.gt / 'bin'}:{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (args.ld_path, str(args.gt / "lib"),
                                                  env.get("LD_LIBRARY_PATH", "")) if p)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["GADGETRON_EXTERNAL_LOG_LEVEL"] = "INFO"
    from cmrecon.gadgetron_install import install
    report = install(args.gt, path=env["PATH"])        # `cmrecon gadgetron install --home GT`
    for w in report.warnings:
        print(f"install warning: {w}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="cmrecon-real-gt-"))
    port = free_port()
    log = open(work / "gadgetron.log", "w")
    server = subprocess.Popen([str(args.gt / "bin" / "gadgetron"), "-p", str(port),
                               "--disable_storage", "true", "-W", str(work)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        time.sleep(2.0)
        if server.poll() is not None:
            print(f"gadgetron exited at start (rc {server.returncode}); see {work / 'gadgetron.log'}")
            return 1
        def session(stream: Path, how: str, flag: str, out: Path):
            t0 = time.perf_counter()
            run = subprocess.run([str(client), "-a", "127.0.0.1", "-p", str(port), "-f", str(stream),
                                  how, flag, "-o", str(out)], env=env, capture_output=True,
                                 text=True, timeout=300)
            last = ((run.stdout + run.stderr).strip().splitlines() or ["no output"])[-1]
            return run.returncode, time.perf_counter() - t0, last

        # the client opens its input file read-write (the ISMRMRD C++ Dataset): give it copies
        for name in set(STREAMS.values()):
            shutil.copy(DATA / name, work / name)
        jobs = [(chain, work / STREAMS[chain], how, flag) for chain in args.chains
                for how, flag in (("-c", f"{chain}.xml"), ("-C", str(ROOT / "chains" / f"{chain}.xml")))]
        if args.peer_data is not None:
            jobs.insert(0, ("default.xml (Gadgetron's own, peer)", args.peer_data, "-c", "default.xml"))
        for chain, stream, how, flag in jobs:
            codes, times, verdict, failures = [], [], "", []
            for k in range(args.repeat):
                out = work / f"{len(rows)}_{k}.h5"
                rc, dt, last = session(stream, how, flag, out)
                codes.append(rc)
                times.append(dt)
                if rc != 0:
                    failures.append(f"rc {rc} after {dt:.1f} s: {last}")
                elif not verdict:
                    verdict = (compare(out, chain, stream) if chain in STREAMS
                               else "image written" if out.exists() else "no output")
            left = wait_no_externals(5.0)
            ok = sum(c == 0 for c in codes)
            rows.append((chain, how, f"{ok}/{len(codes)} ok", float(np.median(times)),
                         verdict + ("; failed: " + " | ".join(sorted(set(failures))) if failures else ""),
                         "none" if left is not None else f"{len(externals())} left"))
            print(" ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
        # an aborted session: the client killed while the chain runs
        stream = work / STREAMS["psir_moco"]
        proc = subprocess.Popen([str(client), "-a", "127.0.0.1", "-p", str(port), "-f", str(stream),
                                 "-c", "psir_moco.xml", "-o", str(work / "aborted.h5")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = wait_no_externals(10.0)
        rows.append(("psir_moco", "client killed", "-", 0.0, "-",
                     f"gone after {left:.1f} s" if left is not None else f"{len(externals())} left"))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    left = wait_no_externals(5.0)
    rows.append(("(server stopped)", "-", "-", 0.0, "-", "none" if left is not None else f"{externals()} left"))
    print(f"stock client, default options (--timeout 10000 ms); {args.repeat} session(s) per row; "
          "median seconds\n")
    print("| chain | client | sessions | s | images vs in-process | externals left |")
    print("|---|---|---|---|---|---|")
    for chain, how, rc, dt, verdict, left_s in rows:
        print(f"| {chain} | {how} | {rc} | {dt:.1f} | {verdict} | {left_s} |")
    print(f"\nlogs: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
