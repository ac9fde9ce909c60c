"""``cmrecon weights import``: a TorchScript PSIRNet (the published ``PSIRNet.pt``) → our checkpoint.

The result is a :func:`~cmrecon.models.weights.save_checkpoint` file with its ``.sha256``
sidecar, which ``psirnet_recon weights=PATH`` loads without TorchScript. The source's digest
must be pinned (``--sha256`` or a sidecar): nothing is deserialised before it is checked.
Parser only here; torch is imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _run_import(args: argparse.Namespace) -> int:
    import torch

    from cmrecon.models.weights import WeightsError, is_torchscript, load_published_verified, save_checkpoint
    src = Path(args.input)
    if not is_torchscript(src):
        raise WeightsError(f"{src} is not a TorchScript archive")
    loaded = load_published_verified(src, args.sha256 or None, args.preset, torch.device("cpu"))
    digest = save_checkpoint(args.output, loaded.model, loaded.config,
                             {"source": src.name, "source_sha256": loaded.sha256, "preset": args.preset})
    print(f"wrote {args.output} (sha256 {digest}) from {src.name} (sha256 {loaded.sha256}); "
          f"use it in a chain: psirnet_recon weights={args.output} (with its folder in "
          "CMRECON_WEIGHTS_PATH or cmrecon serve --weights-path)")
    return 0


def register(subparsers) -> None:
    """Add ``cmrecon weights import`` to the CLI."""
    p = subparsers.add_parser("weights", help="convert model weights")
    sub = p.add_subparsers(dest="weights_command", required=True)
    q = sub.add_parser("import", help="convert a TorchScript PSIRNet (e.g. the published PSIRNet.pt) "
                                      "into a cmrecon checkpoint with sha256 sidecar")
    q.add_argument("input", help="TorchScript archive")
    q.add_argument("-o", "--output", required=True, help="checkpoint to write (.pt; sidecar beside it)")
    q.add_argument("--preset", default="published", help="architecture preset (published, cpu_small)")
    q.add_argument("--sha256", default="", help="digest the input must have (else its .sha256 sidecar)")
    q.set_defaults(func=_run_import)
