"""Thread policy: cmrecon processes run with single-threaded BLAS unless CMRECON_BLAS_THREADS says
otherwise; it is applied at process entry, never by a library call such as run_chain.

Why: the per-readout 16x16 by 16x256 products of ``noise_prewhiten`` took 0.06 s per slice on
an idle 2-core machine and 4.9 s with the cores busy, because multithreaded OpenBLAS spins
threads for each tiny product (bench/bench_lge_chains.py under load, docs/results.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, logging
import numpy, torch
from threadpoolctl import threadpool_info
def blas():
    return sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
before = blas()
from cmrecon.chain.definition import resolve
from cmrecon.chain.runner import run_chain
list(run_chain(resolve("passthrough"), b"<ismrmrdHeader/>", []))
library = blas()   # a notebook's run_chain leaves its numpy alone
from cmrecon.runtime import Settings, configure
configure(Settings.build())   # what cmrecon's main and the Gadgetron external entry do
print(json.dumps({"before": before, "library": library, "after": blas()}))
"""


def _probe(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.pop("CMRECON_BLAS_THREADS", None)
    if env_value is not None:
        env["CMRECON_BLAS_THREADS"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_process_entry_limits_blas_to_one_thread_and_run_chain_alone_does_not():
    r = _probe(None)
    assert r["after"] == [1], r
    assert r["library"] == r["before"], r
    if (os.cpu_count() or 1) > 1:  # the limit is a change, not the library's default
        assert max(r["before"]) > 1, r


def test_env_overrides_and_zero_leaves_blas_alone():
    assert _probe("2")["after"] == [2]
    r = _probe("0")
    assert r["after"] == r["before"]


LATE = r"""
import json
from cmrecon.runtime import Settings, configure
configure(Settings.build())   # the entry runs before numpy or scipy has loaded a BLAS
import numpy, scipy.linalg    # numpy's and scipy's own OpenBLAS load only now
from threadpoolctl import threadpool_info
print(json.dumps(sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})))
"""


def test_blas_loaded_after_the_process_entry_is_limited_too():
    """GRAPPA's calibration uses scipy.linalg, whose OpenBLAS loads at its first import: left at
    the core count it spun its threads in every slice (unfold 1.4x the CPU of its wall time).
    """
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.pop("CMRECON_BLAS_THREADS", None)
    out = subprocess.run([sys.executable, "-c", LATE], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [1]


def test_bad_env_value_is_a_clear_error():
    from cmrecon.errors import CmreconError
    from cmrecon.runtime import Settings, parse_threads
    with pytest.raises(CmreconError, match="CMRECON_BLAS_THREADS"):
        parse_threads("many")
    with pytest.raises(CmreconError, match="CMRECON_BLAS_THREADS"):
        Settings.build(environ={"CMRECON_BLAS_THREADS": "-3"})
    assert Settings.build(threads=3, environ={"CMRECON_BLAS_THREADS": "2"}) == Settings(3, 3)  # flags first
    # compute workers: 0 (one per core) unless CMRECON_WORKERS or --workers says otherwise
    assert Settings.build(environ={}).workers == 0
    assert Settings.build(environ={"CMRECON_WORKERS": "3"}).workers == 3
    assert Settings.build(workers=1, environ={"CMRECON_WORKERS": "3"}).workers == 1
    with pytest.raises(CmreconError, match="CMRECON_WORKERS"):
        Settings.build(environ={"CMRECON_WORKERS": "two"})
    with pytest.raises(CmreconError, match="--workers"):
        Settings.build(workers=-1, environ={})


@pytest.mark.parametrize("value, expect", [(None, "1"), ("2", "2"), ("0", "default")])
def test_torch_threads_policy_is_applied_once_when_the_first_model_loads(value, expect):
    """CMRECON_TORCH_THREADS (default 1) is what `--threads` sets; 0 leaves torch's own count."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "CMRECON_TORCH_THREADS"}
    if value is not None:
        env["CMRECON_TORCH_THREADS"] = value
    code = ("import torch; d = torch.get_num_threads()\n"
            "from cmrecon.runtime import apply_torch_threads\n"
            "n = apply_torch_threads(); print(n, d)")
    n, default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout.split()
    assert n == (default if expect == "default" else expect)


def test_threads_option_rejects_a_negative_count():
    from cmrecon.cli import main
    assert main(["--threads", "-1", "chains", "list"]) == 2
