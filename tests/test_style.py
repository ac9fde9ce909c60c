"""The house rules that a tool can check: ruff (pyflakes, pycodestyle, bugbear, numpy-style
docstrings, import order; configured in pyproject.toml) is clean over the whole tree.
"""

from __future__ import annotations

import subprocess
import sys

from paths import ROOT


def test_ruff_is_clean_over_src_gadgets_tests_and_bench():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "src", "gadgets", "tests", "bench"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in out.stderr, "ruff is a test dependency: pip install -e '.[test]'"
    assert out.returncode == 0, out.stdout + out.stderr
