"""``cmrecon train``: the command-line parser, kept apart from the training code.

Building the CLI must not import torch (``cmrecon --version`` and ``chains list`` stay fast);
the handler imports :mod:`cmrecon.models.train` only when training actually runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run_psirnet(args: argparse.Namespace) -> int:
    from cmrecon.models.train import load_config, train
    given = {"device": args.device, "threads": args.threads, "num_workers": args.workers,
             "epochs": args.epochs}
    cfg = load_config(args.config).with_train(**{k: v for k, v in given.items() if v is not None})
    result = train(cfg, args.out or str(Path("runs") / cfg.name), resume=args.resume,
                   max_steps=args.max_steps)
    print(f"train: {result.steps} steps, {result.samples} samples, best validation loss "
          f"{result.best_val_loss:.4f}; outputs in {result.out_dir}", file=sys.stderr)
    return 0


def _run_refine(args: argparse.Namespace) -> int:
    from cmrecon.models.refine import train_refine
    best = train_refine(args.out, n_train=args.samples, n_val=args.val_samples, minutes=args.minutes,
                        seed=args.seed, threads=args.threads,
                        say=lambda line: print(line, flush=True))
    print(f"weights: {args.out}/best.pt (+ .sha256); use in a chain: psir_refine weights={args.out}/best.pt "
          f"(with {args.out} in CMRECON_WEIGHTS_PATH or cmrecon serve --weights-path)")
    return 0 if best["epoch"] > 0 else 1


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` (with its ``psirnet`` kind) to the cmrecon CLI."""
    p = subparsers.add_parser("train", help="train a learned reconstruction on simulated data",
                              description="Train a learned reconstruction on simulated data.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    q = kinds.add_parser("psirnet", help="PSIRNet-style unrolled IR/PD network (1 − SSIM loss)",
                         description="Train the PSIRNet-style unrolled IR/PD network on simulated data.")
    q.add_argument("--config", required=True, help="YAML training config (configs/*.yaml)")
    q.add_argument("--out", help="output folder (default runs/<config name>)")
    q.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    q.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override train.device")
    q.add_argument("--threads", type=int, help="override train.threads (torch CPU threads)")
    q.add_argument("--workers", type=int, help="override train.num_workers (data processes)")
    q.add_argument("--epochs", type=int, help="override train.epochs")
    q.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    q.set_defaults(func=_run_psirnet)
    r = kinds.add_parser("refine", help="residual refinement of the classical single shot (models/refine.py)",
                         description="Train PsirRefine: a zero-initialised residual U-Net on the "
                                     "classical GRAPPA IR/PD images, for a wall-clock budget.")
    r.add_argument("--out", required=True, help="output folder (best.pt + .sha256)")
    r.add_argument("--samples", type=int, default=900, help="simulated training shots (default 900)")
    r.add_argument("--val-samples", type=int, default=48)
    r.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget incl. data (default 30)")
    r.add_argument("--seed", type=int, default=2026)
    r.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    r.set_defaults(func=_run_refine)
    return p
