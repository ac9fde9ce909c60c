"""A Gadgetron external starts fast: classical chains never import torch (measured in bench/)."""

from __future__ import annotations

import subprocess
import sys

from paths import DATA


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                         check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_importing_the_gadget_package_imports_neither_torch_nor_scipy_signal():
    mods = _modules_after("import cmrecon_gadgets")
    assert "torch" not in mods
    assert "scipy.signal" not in mods


def test_a_classical_lge_chain_runs_without_importing_torch():
    code = ("from cmrecon.server.client import replay_in_process\n"
            f"r = replay_in_process({str(DATA / 'sim_lge_r2_embedded.h5')!r}, 'psir_classic')\n"
            "assert len(r.images) == 2, len(r.images)")
    assert "torch" not in _modules_after(code)


def test_building_the_cli_imports_neither_torch_nor_scipy():
    """`cmrecon --version`, `chains list`: no training or simulator numerics at start-up."""
    mods = _modules_after("from cmrecon.cli import build_parser\nbuild_parser()")
    assert "torch" not in mods
    assert not any(m == "scipy.ndimage" or m.startswith("scipy.signal") for m in mods)
