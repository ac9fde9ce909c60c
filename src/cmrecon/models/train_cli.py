"""``cmrecon train``: the command-line parser, kept apart from the training code.

Building the CLI must not import torch (``cmrecon --version`` and ``chains list`` stay fast);
the handler imports :mod:`cmrecon.models.train` only when training actually runs.
"""

from __future__ import annotations

import argparse


def _run_psirnet(args: argparse.Namespace) -> int:
    from cmrecon.models.train import _run_psirnet as run
    return run(args)


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
    return p
