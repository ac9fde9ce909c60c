"""Held-out test metrics of trained PSIRNet weights on simulated training-style samples.

The test set is drawn like the validation set of ``cmrecon train psirnet`` (spawn key
``(1, i)`` of its own seed) but with a seed used neither for training (spawn keys ``(0, …)``)
nor for model selection (``validation.seed`` of the config), so these numbers did not steer
anything. Beside the model, the parameter-free PSIRNet head on the zero-filled SENSE combination
(×R, the input the network starts from) is scored as a floor. Metrics as
:func:`cmrecon.models.train.validate`: SSIM on target-min–max-scaled images (published
convention), PSNR, NRMSE (image / body / heart), against the noisy MOCO-style target and the
noise-free target.

Run:  python bench/heldout_psirnet.py --config configs/psirnet_cpu_small.yaml [--n 48]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import torch

from cmrecon.models import train as tr
from cmrecon.models.serving import get_model
from cmrecon.recon.operators import ifft2c, reduce
from cmrecon.recon.psir_head import psir_head_tensor

TEST_SEED = 888_001


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/psirnet_cpu_small.yaml")
    ap.add_argument("--weights", default="psirnet_cpu_small")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = tr.load_config(args.config)
    if cfg.validation.seed == TEST_SEED:
        raise SystemExit("the test seed must differ from the validation seed")
    test_cfg = dataclasses.replace(cfg, validation=dataclasses.replace(
        cfg.validation, seed=TEST_SEED, n=args.n, sizes=((128, 96), (96, 96), (64, 48))))
    test_set = tr.make_validation_set(test_cfg)
    model = get_model(args.weights, "cpu").model
    per = {"model": [], "zero_filled_head": []}
    for s in test_set:
        with torch.inference_mode():
            pred = model(*(s[k] for k in tr.MODEL_INPUTS))
            R = float(s["acceleration"][0])
            zf = psir_head_tensor(R * reduce(ifft2c(s["ir_kspace"]), s["sens_maps"]),
                                  R * reduce(ifft2c(s["pd_kspace"]), s["sens_maps"]), 7, 16.0, 1e-6)
        heart, body = s["heart_mask"][0, 0].numpy(), s["body_mask"][0, 0].numpy()
        for name, p in (("model", pred), ("zero_filled_head", zf)):
            row = {"R": int(R), "coils": int(s["ir_kspace"].shape[1]), "snr": float(s["snr"][0])}
            for prefix, key in (("moco", "target_moco_noisy"), ("clean", "target_clean")):
                m = tr.image_metrics(p[0, 0].numpy(), s[key][0, 0].numpy(), heart, body)
                row.update({f"{prefix}_{k}": v for k, v in m.items()})
            per[name].append(row)
    keys = ["moco_ssim", "moco_psnr", "moco_nrmse", "moco_nrmse_heart", "clean_ssim",
            "clean_psnr", "clean_nrmse", "clean_nrmse_body", "clean_nrmse_heart"]
    print(f"Held-out test set: {args.n} samples, seed {TEST_SEED}, weights {args.weights}\n")
    print("| method | R | n | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    summary = {}
    for name, rows in per.items():
        for R in ("all", 1, 2, 3):
            sel = [r for r in rows if R == "all" or r["R"] == R]
            if not sel:
                continue
            means = {k: float(np.mean([r[k] for r in sel])) for k in keys}
            summary[f"{name}/R{R}"] = dict(means, n=len(sel))
            print(f"| {name} | {R} | {len(sel)} | " + " | ".join(
                f"{means[k]:.2f}" if "psnr" in k else f"{means[k]:.4f}" for k in keys) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
