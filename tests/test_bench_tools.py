"""Checks the benchmarks outside CI rely on, run in CI where they need no peer.

bench/real_gadgetron.py reports "externals left: none" after every row: that is only evidence if
its probe can see an external at all. It once ran ``pgrep -f "-m gadgetron …"``, which procps-ng
parses as an unknown option ``-m``: no output, so "none" every time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
real_gadgetron = pytest.importorskip("real_gadgetron")


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_leftover_probe_sees_an_external_shaped_process_and_its_end():
    # the command line Gadgetron gives an external: python -m gadgetron PORT MODULE TARGET
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "gadgetron",
                             "9002", "cmrecon_gadgets", "steps"])
    try:
        deadline = time.monotonic() + 10
        while proc.pid not in real_gadgetron.externals() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.pid in real_gadgetron.externals()
        assert proc.pid not in real_gadgetron.externals(python="/bin/sh")   # another interpreter's
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in real_gadgetron.externals()
