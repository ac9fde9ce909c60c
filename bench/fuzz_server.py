"""The longer fuzzer: thousands of mutated MRD sessions against an in-process server.

Prints outcome counts per mutation kind (images / err / closed / hang) and the process's peak RSS
before and after, so a leak or an unbounded allocation shows; the bounded version runs in the
tests (tests/server/test_fuzz.py). Run::

    python bench/fuzz_server.py --sessions 3000
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_sessions import fuzz, summary  # noqa: E402

from cmrecon.server.client import query_server  # noqa: E402
from cmrecon.server.tcp import MrdServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--soak", type=int, default=0,
                    help="instead: this many valid sessions, printing RSS after every tenth (drift)")
    args = ap.parse_args()
    logging.disable(logging.ERROR)   # every refused session logs an error; the table says it
    srv = MrdServer("127.0.0.1", 0, idle_timeout_s=20.0, drain_timeout_s=0.5)
    srv.start_background()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if args.soak:
        return soak(srv, args.soak, t0)
    outcomes = []
    step = max(1, args.sessions // 10)
    for start in range(0, args.sessions, step):   # progress per tenth
        n = min(step, args.sessions - start)
        outcomes += fuzz(srv.port, n, seed=args.seed + start)
        print(f"{start + n}/{args.sessions} sessions, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    healthy = query_server("gadgetron::health", "127.0.0.1", srv.port, 10) == "ok"
    srv.shutdown()
    srv.server_close()
    counts = summary(outcomes)
    kinds = sorted({k for k, _ in counts})
    results = ("images", "err", "closed", "hang")
    print(f"| kind | {' | '.join(results)} |\n|---|{'---|' * len(results)}")
    for k in kinds:
        print(f"| {k} | {' | '.join(str(counts.get((k, r), 0)) for r in results)} |")
    internal = sum("internal" in o.detail for o in outcomes)
    nonfinite = Counter(o.kind for o in outcomes if o.nonfinite)
    print("\nsessions whose images hold NaN or infinite pixels: "
          + (", ".join(f"{k} {n}" for k, n in sorted(nonfinite.items())) or "none")
          + (f" ({sum(o.nonfinite for o in outcomes)} images)" if nonfinite else ""))
    print(f"\n{len(outcomes)} sessions in {time.perf_counter() - t0:.0f} s; internal errors {internal}; "
          f"peak RSS {rss0:.0f} → {rss1:.0f} MiB; server healthy afterwards: {healthy}")
    return 0 if healthy and not internal and not counts.get(("valid", "hang")) else 1


def _rss_mib() -> float:
    """Current resident set size (not the peak), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def soak(srv: MrdServer, n: int, t0: float) -> int:
    """``n`` valid sessions; RSS after each tenth shows drift (a leak grows it steadily)."""
    from fuzz_sessions import play, valid_session
    base = valid_session()
    rss = []
    for i in range(n):
        outcome = play(srv.port, base, "valid")
        if outcome.result != "images":
            print(f"session {i}: {outcome}", file=sys.stderr)
            return 1
        if (i + 1) % max(1, n // 10) == 0:
            rss.append(_rss_mib())
            print(f"{i + 1}/{n} sessions, RSS {rss[-1]:.1f} MiB, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    srv.shutdown()
    srv.server_close()
    print(f"{n} valid sessions: RSS after the first tenth {rss[0]:.1f} MiB, after all {rss[-1]:.1f} MiB "
          f"(drift {rss[-1] - rss[0]:+.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
