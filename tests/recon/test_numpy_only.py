"""The classical numerics run where torch cannot be imported, and do not import it."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import numpy as np
    from cmrecon.coils.maps import inati, walsh
    from cmrecon.recon.box import box_mean
    from cmrecon.recon.fft import fft2c, ifft2c
    from cmrecon.recon.psir import psir
    from cmrecon.recon.sense import cg_sense, coil_combine, sense_unfold

    rng = np.random.default_rng(0)
    def cplx(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    ir, pd = cplx(32, 24), cplx(32, 24) + 5
    res = psir(ir, pd)
    assert res.psir.shape == (32, 24) and np.isfinite(res.psir).all()
    coil_images = cplx(4, 32, 24)
    maps = walsh(coil_images)
    assert np.isfinite(inati(coil_images)).all()
    kspace = fft2c(coil_images)
    mask = np.zeros(32, bool)
    mask[::2] = True
    assert cg_sense(kspace * mask[None, :, None], maps, mask, iterations=3).shape == (32, 24)
    assert sense_unfold(kspace * mask[None, :, None], maps, mask, 2).shape == (32, 24)
    assert coil_combine(ifft2c(kspace), maps).dtype == np.complex64
    assert box_mean(np.ones((8, 8)), 3, "symmetric").sum() == 64
    assert sys.modules["torch"] is None
    print("ok")
""")


def test_classical_psir_sense_and_coil_maps_run_with_torch_import_blocked():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
