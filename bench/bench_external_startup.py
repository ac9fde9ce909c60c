"""Start-up cost of a Gadgetron external step: ours against the gadgetron package's own example.

A real Gadgetron starts every ``<external>`` of a chain as ``python -m gadgetron <port> <module>
<target>`` when a session begins, and the stock client gives up after 10 s. This measures, in
fresh processes, the way Gadgetron starts them (tests/gadgetron_harness.py plays the server):

* ``import`` — ``python -c "import X"`` wall time;
* ``connect`` — spawn → the external connected back;
* ``session`` — spawn → CLOSE answered for an empty session (CONFIG, HEADER, CLOSE): the
  external's whole fixed cost before its first readout;
* ``recorded`` — spawn → last image of the recorded 64×48 LGE stream (tests/data), per chain.

Peer: ``gadgetron.examples.pass_through`` (the package's example external), run the same way
in the same script. Median of ``--runs`` runs; the ratio column is ours / the peer's session.

Run::

    python bench/bench_external_startup.py --runs 5

Result (2026-12-02, 2 cores, quiet machine)::

    median of 5 runs; import torch alone: 2.18 s
    | external | import s | connect s | empty session s | / peer | recorded LGE stream s |
    | gadgetron.examples.pass_through (peer) | 0.58 | 0.56 | 0.58 | 1.00 | – |
    | fft_rss | 0.61 | 0.57 | 0.77 | 1.33 | 0.74 |
    | psir_classic | 0.61 | 0.49 | 0.68 | 1.18 | 0.64 |
    | psir_moco | 0.61 | 0.46 | 0.64 | 1.12 | 0.76 |
    | psirnet_lge | 0.61 | 0.44 | 0.60 | 1.04 | 3.02 |
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cmrecon.chain.definition import chains_dir  # noqa: E402
from cmrecon.io.mrdfile import iter_items, read_header_xml  # noqa: E402

from gadgetron_harness import play_gadgetron  # noqa: E402

STREAM = ROOT / "tests" / "data" / "sim_lge_r2_embedded.h5"


def import_s(module: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - t0


def external(chain: str) -> tuple[str, str]:
    ext = ET.parse(chains_dir() / f"{chain}.xml").getroot().find("stream")[0]
    conf = ext.find("configuration")
    return ext.find("execute").get("target"), (ET.tostring(conf, encoding="unicode")
                                                if conf is not None else "<configuration/>")


def session(module: str, target: str, config: str, items) -> tuple[float, float]:
    played = play_gadgetron(target, config, read_header_xml(STREAM), items, deadline_s=None,
                            module=module)
    assert played.returncode == 0, played.stderr[-1000:]
    return played.connect_s, played.session_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    items = list(iter_items(STREAM))
    rows = []
    med = statistics.median
    imp = {m: med([import_s(m) for _ in range(args.runs)])
           for m in ("gadgetron", "cmrecon_gadgets", "torch")}
    peer_conn, peer_sess = zip(*[session("gadgetron.examples", "pass_through", "<configuration/>", [])
                                 for _ in range(args.runs)])
    rows.append(("gadgetron.examples.pass_through (peer)", imp["gadgetron"], med(peer_conn), med(peer_sess), None))
    for chain in ("fft_rss", "psir_classic", "psir_moco", "psirnet_lge"):
        target, config = external(chain)
        empty = [session("cmrecon_gadgets", target, config, []) for _ in range(args.runs)]
        full = [session("cmrecon_gadgets", target, config, items)[1] for _ in range(args.runs)]
        rows.append((chain, imp["cmrecon_gadgets"], med([c for c, _ in empty]),
                     med([s for _, s in empty]), med(full)))
        print(f"{chain}: done", file=sys.stderr, flush=True)
    print(f"median of {args.runs} runs; import torch alone: {imp['torch']:.2f} s\n")
    print("| external | import s | connect s | empty session s | / peer | recorded LGE stream s |")
    print("|---|---|---|---|---|---|")
    for name, i, c, s, f in rows:
        print(f"| {name} | {i:.2f} | {c:.2f} | {s:.2f} | {s / med(peer_sess):.2f} | "
              + (f"{f:.2f} |" if f is not None else "– |"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
