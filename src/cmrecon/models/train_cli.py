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
    from cmrecon.models.refine import PROTOCOLS, train_refine
    best = train_refine(args.out, n_train=args.samples, n_val=args.val_samples, minutes=args.minutes,
                        seed=args.seed, threads=args.threads, workers=args.workers, device=args.device,
                        chans=args.chans, pools=args.pools, lr=args.lr, batch=args.batch, init=args.init,
                        noise_channel=not args.no_noise_channel, protocol=PROTOCOLS[args.protocol],
                        say=lambda line: print(line, flush=True))
    print(f"best epoch {best['epoch']} (0 = the start); weights: {args.out}/best.pt (+ .sha256); "
          f"use in a chain: psir_refine weights={args.out}/best.pt "
          f"(with {args.out} in CMRECON_WEIGHTS_PATH or cmrecon serve --weights-path)")
    return 0


def _run_cine(args: argparse.Namespace) -> int:
    from cmrecon.models.cine_train import CineTrainSettings, run_cine_training
    given = {"steps": args.steps, "minutes": args.minutes, "threads": args.threads, "seed": args.seed,
             "train_cases": args.train_cases, "val_cases": args.val_cases, "chans": args.chans,
             "num_cascades": args.cascades, "crop_x": args.crop_x, "lr": args.lr,
             "val_every": args.val_every, "dynamic_weight": args.dynamic_weight,
             "init_weights": args.init_weights, "warmup_steps": args.warmup_steps}
    settings = CineTrainSettings(**{k: v for k, v in given.items() if v is not None})
    outcome = run_cine_training(settings, args.out, args.cache or str(Path(args.out) / "cache"),
                                resume=args.resume, ship=args.ship, source=args.source,
                                max_steps=args.max_steps, say=lambda line: print(line, flush=True))
    print(f"weights: {args.out}/best.pt (+ .sha256), validation dynamic NMSE "
          f"{outcome.best['nmse_dynamic']:.4f} at step {outcome.best['step']}")
    return 0


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
    r.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 = torch's own)")
    r.add_argument("--workers", type=int, default=1, help="processes drawing the samples (default 1)")
    r.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda; default cpu)")
    r.add_argument("--chans", type=int, default=16, help="first-level U-Net channels (default 16)")
    r.add_argument("--pools", type=int, default=3, help="U-Net pooling levels (default 3)")
    r.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    r.add_argument("--batch", type=int, default=4, help="shots per step (default 4)")
    r.add_argument("--init", help="PsirRefine checkpoint to start from (fine-tuning; same chans/pools)")
    r.add_argument("--protocol", choices=("v1", "v2"), default="v2",
                   help="training shots: v2 (default) 64x48 to 128x96, R 1-3 equally; v1 the first "
                        "model's 128x96, R 1/2/2/3/3 (models/refine.py PROTOCOLS)")
    r.add_argument("--no-noise-channel", action="store_true",
                   help="train without the noise-level input channel (the first model's architecture)")
    r.set_defaults(func=_run_refine)
    c = kinds.add_parser("cine", help="CRUNet-style cine model on simulated cine slices (models/crunet.py)",
                         description="Train CineCRUNet on simulated cine slices run through the "
                                     "chain's own front end; keeps the best on held-out validation.")
    c.add_argument("--out", required=True, help="run folder (last.pt, best.pt + .sha256, metrics.jsonl)")
    c.add_argument("--cache", help="folder of cached slices (default <out>/cache)")
    c.add_argument("--source", choices=("sim", "phantom"), default="sim",
                   help="simulated cine cases (default) or the analytic phantom (smoke runs)")
    c.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    c.add_argument("--ship", help="write the best weights here when training stops (+ .sha256)")
    c.add_argument("--steps", type=int, help="optimiser steps in total (default 3000)")
    c.add_argument("--minutes", type=float, help="wall-clock budget of this call (default none)")
    c.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    c.add_argument("--threads", type=int, help="torch threads (default 1)")
    c.add_argument("--seed", type=int)
    c.add_argument("--train-cases", type=int, help="simulated training cases (default 160)")
    c.add_argument("--val-cases", type=int, help="simulated validation cases (default 6)")
    c.add_argument("--chans", type=int, help="feature channels (default 16)")
    c.add_argument("--cascades", type=int, help="unrolled cascades (default 4)")
    c.add_argument("--crop-x", type=int, help="image columns per training step (default 48; 0 = all)")
    c.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    c.add_argument("--val-every", type=int, help="steps per validation (default 200)")
    c.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default 100)")
    c.add_argument("--dynamic-weight", type=float,
                   help="weight of a dynamic-region NMSE loss term (default 0: CRUNet's loss)")
    c.add_argument("--init-weights", help="CineCRUNet checkpoint to start from (fine-tuning)")
    c.set_defaults(func=_run_cine)
    return p
