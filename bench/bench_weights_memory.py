"""Peak memory of loading a TorchScript PSIRNet: copies of the weights held at once.

A PSIRNet of the published layout at half the channels (12 cascades, 48 channels, 4 pools) is
scripted and saved, then loaded in fresh processes two ways, measuring the peak resident set
(``VmHWM`` − ``VmRSS`` before loading, from ``/proc/self/status``) above the process's baseline
after importing torch, with every weight read once
after loading (as a forward pass would; a lazily read archive is otherwise not resident):

* ``load_published`` (ours: the eager model takes the scripted tensors, ``assign=True``);
* the earlier way (peer, reproduced here): eager model materialised, every tensor cloned in.

Column ``copies`` = (peak − baseline) / file size. The published file (845 M parameters,
3.4 GB) peaked at 10.2 GB the earlier way (issue 12); the goal is ≤ 2 copies.

Run::

    python bench/bench_weights_memory.py

Result (2026-12-02, 211,368,330 parameters, file 0.79 GiB)::

    | load | peak above baseline GiB | copies of the weights |
    | earlier (clone, peer) | 2.41 | 3.05 |
    | ours (load_published) | 0.83 | 1.05 |
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = dict(num_cascades=12, chans=48, sens_chans=16, pools=4, sens_pools=4)

CHILD = r"""
import sys, torch
from cmrecon.models.psirnet import PSIRNet
from cmrecon.models.weights import load_published, load_torchscript
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
config = {config}
base = status("VmRSS")
if sys.argv[1] == "ours":
    model = load_published(sys.argv[2], config=config)
else:  # the earlier way: materialise the eager model, clone every scripted tensor into it
    scripted = load_torchscript(sys.argv[2])
    model = PSIRNet.from_config(config)
    model.load_state_dict({{k: v.detach().clone() for k, v in scripted.state_dict().items()}})
total = 0.0
for t in model.state_dict().values():   # touch every weight (a forward pass would)
    total += float(t.float().sum()) if t.is_floating_point() else 0.0
print(status("VmHWM") - base)
"""


def main() -> int:
    import torch

    from cmrecon.models.psirnet import PSIRNet, count_parameters
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "psirnet_half.pt"
        model = PSIRNet(**CONFIG).eval()
        n = count_parameters(model)
        torch.jit.script(model).save(str(path))
        del model
        size = path.stat().st_size
        print(f"scripted PSIRNet {CONFIG}: {n:,} parameters, file {size / 2**30:.2f} GiB\n")
        print("| load | peak above baseline GiB | copies of the weights |")
        print("|---|---|---|")
        for how in ("earlier (clone, peer)", "ours (load_published)"):
            arg = "ours" if how.startswith("ours") else "peer"
            out = subprocess.run([sys.executable, "-c", CHILD.format(config=CONFIG), arg, str(path)],
                                 capture_output=True, text=True, check=True).stdout.split()[-1]
            peak = int(out)
            print(f"| {how} | {peak / 2**30:.2f} | {peak / size:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
