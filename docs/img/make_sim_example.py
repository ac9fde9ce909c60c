"""Regenerate docs/img/sim_example.png (run from the repository root)."""

import numpy as np

from cmrecon.axes import centre_crop, shape_yx
from cmrecon.io.png import save_panel
from cmrecon.recon.fft import ifft2c
from cmrecon.recon.noise import prewhiten, prewhitening_matrix
from cmrecon.sim.lge import LgeParams, simulate_lge

p = LgeParams(slices=1, repeats=1, coils=16, matrix=(128, 96), acceleration=1, acs_lines=0,
              resp_amplitude_mm=0.0, snr=25.0, seed=5)
case = simulate_lge(p)
t = case.truth
# one noisy repeat, fully sampled, reconstructed with the true maps (what the recon sees)
k = np.zeros((p.coils, 2, p.matrix[1], p.n_ro_os), np.complex64)         # (coils, sets, ky, kx)
for a in case.items[p.noise_readouts:]:
    k[:, a.idx.set, a.idx.kspace_encode_step_1] = a.data
img = centre_crop(ifft2c(prewhiten(k, prewhitening_matrix(t.psi))), shape_yx(p.matrix))
noisy = np.sum(np.conj(t.coil_maps[0])[:, None] * img, axis=0)
win = (-0.6, 2.0)
tiles = [("IR truth |.|", np.abs(t.ir[0]), None), ("PD truth |.|", np.abs(t.pd[0]), None),
         ("PSIR target", t.psir_target[0], win), ("IR/PD ratio", t.psir_ratio[0], win),
         ("IR noisy 1 rep", np.abs(noisy[0]), None), ("labels", t.labels[0].astype(float), (0, 13)),
         ("heart mask", t.heart_mask[0].astype(float), (0, 1)),
         ("|coil 0| map", np.abs(t.coil_maps[0, 0]), (0, 1))]
save_panel("docs/img/sim_example.png", tiles, ncols=4, scale=2)
