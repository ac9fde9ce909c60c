"""The recorded CI streams in tests/data are reproduced bit for bit by the simulator.

Bit for bit across machines because the simulator mixes coils with
:func:`cmrecon.sim.kspace.mix_coils` (elementwise float64, no BLAS: a BLAS gemm picks its kernel by
CPU model, and the first recorded files failed on another CPU by 1.5e-7 of the peak). numpy's
transcendental ufuncs (exp, sin, cos) still round differently on x86 CPUs without AVX2.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cmrecon.io.mrdfile import iter_items, read_header_xml
from cmrecon.sim.truth import SimTruth

DATA = Path(__file__).resolve().parents[1] / "data"


def _recorded_module():
    spec = importlib.util.spec_from_file_location("make_recorded", DATA / "make_recorded.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REC = _recorded_module()


@pytest.mark.parametrize("name", sorted(REC.RECORDED_CASES))
def test_recorded_case_is_reproduced(name):
    from cmrecon.sim.lge import simulate_lge

    h5 = DATA / f"sim_lge_{name}.h5"
    assert h5.stat().st_size < 2_000_000
    case = simulate_lge(REC.RECORDED_CASES[name])
    assert read_header_xml(h5).decode() == case.header_xml
    stored = list(iter_items(h5))
    assert len(stored) == len(case.items)
    for a, b in zip(stored, case.items):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.getHead() == b.getHead()
    truth = SimTruth.load(DATA / f"sim_lge_{name}_truth.npz")
    for key in ("ir", "pd", "psir_target", "labels", "coil_maps", "psi"):
        np.testing.assert_array_equal(getattr(truth, key), getattr(case.truth, key))


@pytest.mark.parametrize("name", sorted(REC.RECORDED_CINE_CASES))
def test_recorded_cine_case_is_reproduced(name):
    from cmrecon.sim.cine import simulate_cine
    from cmrecon.sim.cine_truth import CineTruth

    h5, npz = REC.case_paths("cine", name)
    assert h5.stat().st_size < 2_000_000
    case = simulate_cine(REC.RECORDED_CINE_CASES[name])
    assert read_header_xml(h5).decode() == case.header_xml
    stored = list(iter_items(h5))
    assert len(stored) == len(case.items)
    for a, b in zip(stored, case.items):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.getHead() == b.getHead()
    truth = CineTruth.load(npz)
    for key in ("images", "labels", "coil_maps", "dynamic_mask", "static_mask", "sampling_mask", "psi"):
        np.testing.assert_array_equal(truth[key], case.truth[key])


def test_coil_mixing_matches_matmul_and_ignores_the_blas_kernel():
    """mix_coils is ``matrix @ x`` to float64 rounding, and does not call BLAS at all."""
    from cmrecon.sim.kspace import mix_coils

    rng = np.random.default_rng(5)
    m = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    x = (rng.standard_normal((6, 10, 7)) + 1j * rng.standard_normal((6, 10, 7))).astype(np.complex64)
    ref = (m @ x.reshape(6, -1).astype(np.complex128)).reshape(6, 10, 7)
    np.testing.assert_allclose(mix_coils(m, x), ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    with pytest.raises(ValueError, match="does not apply"):
        mix_coils(m, x[:5])
    probe = ("import numpy as np, hashlib; from cmrecon.sim.kspace import mix_coils; "
             "r = np.random.default_rng(1); m = r.standard_normal((16, 16)) + 1j * r.standard_normal((16, 16)); "
             "x = r.standard_normal((16, 5000)) + 1j * r.standard_normal((16, 5000)); "
             "print(hashlib.sha256(mix_coils(m, x).tobytes()).hexdigest())")
    digests = set()
    for core in ("Haswell", "SkylakeX", "Sandybridge"):
        env = {**os.environ, "OPENBLAS_CORETYPE": core}
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                             check=True, timeout=120)
        digests.add(out.stdout.strip())
    assert len(digests) == 1
