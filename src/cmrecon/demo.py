"""``cmrecon demo``: the main job on the embedded default, end to end on one machine.

Simulates a small LGE case (with its ground truth: one slice, two IR/PD repeats with breathing,
12 coils, R = 2), starts the embedded MRD server on a free loopback port, streams the case
through a chain (default ``psirnet_lge``, the learned single-shot PSIR with the shipped weights)
exactly as a scanner or ``gadgetron_ismrmrd_client`` would, and writes what came back: an
ISMRMRD image file (Gadgetron client layout), one PNG per image and a panel PNG (PSIR, MagIR,
PD beside the noise-free truth). Every file is written atomically (:mod:`cmrecon.io.atomic`): a
file that cannot be written is one line on stderr (exit 2) and leaves nothing at its name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cmrecon.io.atomic import make_folder
from cmrecon.io.images import PSIR_WINDOW, display_view
from cmrecon.io.mrdfile import write_dataset
from cmrecon.io.png import save_panel

DEFAULT_CHAIN = "psirnet_lge"


def run_demo(output: Path, chain: str = DEFAULT_CHAIN, seed: int = 1, repeats: int = 2) -> int:
    """Simulate, serve, replay, write. Returns 0; raises CmreconError on failure."""
    from cmrecon.cli import write_outputs
    from cmrecon.server.client import replay_remote
    from cmrecon.server.tcp import MrdServer
    from cmrecon.sim.lge import LgeParams, simulate_lge

    make_folder(output)
    params = LgeParams(slices=1, repeats=repeats, coils=12, matrix=(128, 96), acceleration=2,
                       acs_lines=24, seed=seed)
    print(f"demo: simulating an LGE case {params.matrix[0]}x{params.matrix[1]}, {params.coils} coils, "
          f"R={params.acceleration}, {params.repeats} IR/PD repeats (seed {seed})", file=sys.stderr)
    case = simulate_lge(params)
    raw = output / "case.h5"
    write_dataset(raw, case.header_xml, case.items)
    case.truth.save(output / "case_truth.npz")
    server = MrdServer("127.0.0.1", 0)
    server.start_background()
    try:
        print(f"demo: streaming {raw} through chain '{chain}' on the embedded server "
              f"127.0.0.1:{server.port}", file=sys.stderr)
        result = replay_remote(raw, port=server.port, chain_name=chain, show_progress=True)
    finally:
        server.shutdown()
        server.server_close()
    images_path = output / "images.h5"
    images_path.unlink(missing_ok=True)
    write_outputs(result.images, str(images_path), "demo", str(output / "png"))
    tiles = [display_view(img) for img in result.images]
    tiles.append(("truth PSIR (noise-free MOCO)", case.truth.psir_target[0], PSIR_WINDOW))
    panel = save_panel(output / "panel.png", tiles, ncols=min(4, len(tiles)))
    print(f"demo: {len(result.images)} images -> {images_path} (group 'demo'), PNGs in "
          f"{output / 'png'}, panel {panel}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``cmrecon demo`` to the CLI."""
    p = subparsers.add_parser("demo", help="simulate a small LGE case, stream it through the embedded "
                                           "server, write images and PNGs")
    p.add_argument("-o", "--output", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("-c", "--chain", default=DEFAULT_CHAIN, help=f"chain (default {DEFAULT_CHAIN})")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=lambda a: run_demo(Path(a.output), a.chain, a.seed))
