"""How much of the single-shot error is the choice of repeat? psir_classic on every repeat.

For held-out free-breathing cases (``bench/eval_psirnet.py``'s ``case_params``, one slice each)
``psir_classic`` runs once per repeat (``psir.repeat = k``) and once with the automatic choice
(``-1``: repeat closest to the mean IR magnitude), beside ``psir_moco``. Heart NRMSE against the
noise-free MOCO target (``cmrecon.evaluate.score_slice``) for: the automatic choice, the best
repeat in hindsight (oracle), the repeat with the smallest true displacement (oracle, from the
simulator's ``motion_px``), the median repeat, and psir_moco.

Run::

    python bench/repeat_choice.py --cases 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_psirnet as ev  # noqa: E402  (case_params: the held-out protocol)

from cmrecon.chain.definition import resolve, with_step_params  # noqa: E402
from cmrecon.evaluate import psir_ratio_images, score_slice, with_float_ratio  # noqa: E402
from cmrecon.sim.lge import simulate_lge  # noqa: E402


def classic_with_repeat(k: int):
    """``psir_classic`` with ``psir.repeat = k`` and float ratio output."""
    return with_float_ratio(with_step_params(resolve("psir_classic"), "psir", repeat=k))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    chains = {k: classic_with_repeat(k) for k in range(-1, args.repeats)}
    chains["moco"] = with_float_ratio(resolve("psir_moco"))
    cols = ("automatic", "best repeat (oracle)", "least displaced (oracle)", "median repeat",
            "psir_moco")
    rows = []
    for i in range(args.cases):
        t0 = time.perf_counter()
        p = ev.case_params(i, 1, args.repeats)
        case = simulate_lge(p)
        nr = {k: score_slice(psir_ratio_images(c, case.header_xml, case.items)[0], case.truth, 0)
              ["nrmse_heart"] for k, c in chains.items()}
        per = np.array([nr[k] for k in range(args.repeats)])
        disp = np.linalg.norm(case.truth.motion_px[0][:, 0], axis=1)   # IR displacement, px
        rows.append((nr[-1], per.min(), per[int(np.argmin(disp))], float(np.median(per)),
                     nr["moco"]))
        print(f"case {i + 1}/{args.cases} seed{p.seed} (R {p.acceleration}, breathing "
              f"{p.resp_amplitude_mm:.1f} mm) {time.perf_counter() - t0:.1f} s: "
              + ", ".join(f"{c} {v:.3f}" for c, v in zip(cols, rows[-1])), file=sys.stderr,
              flush=True)
    r = np.array(rows)
    print("| heart NRMSE vs noise-free MOCO target | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    print(f"| mean ± sd over {len(r)} slices | "
          + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(r.mean(0), r.std(0, ddof=1))) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
