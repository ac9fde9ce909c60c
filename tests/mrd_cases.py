"""A small Cartesian multi-coil dataset with a known truth, written as an ISMRMRD file.

Independent of the LGE simulator on purpose: the streaming core is tested against the
simplest data whose exact coil-combined image is known in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import ismrmrd
import ismrmrd.xsd as X
import numpy as np

from cmrecon.io.mrdfile import write_dataset
from cmrecon.recon.fft import fft2c


@dataclass
class Case:
    header_xml: str
    items: list
    truth_rss: np.ndarray  # (slices, y, x) noise-free RSS of the prewhitened coil images (true Ψ)
    noise_cov: np.ndarray  # (coils, coils) true noise covariance Ψ
    noise_samples: int  # samples per coil in the noise scan


def _header(nx_enc: int, nx: int, ny: int, coils: int, slices: int) -> str:
    enc = X.encodingType(
        trajectory=X.trajectoryType.CARTESIAN,
        encodedSpace=X.encodingSpaceType(matrixSize=X.matrixSizeType(x=nx_enc, y=ny, z=1),
                                         fieldOfView_mm=X.fieldOfViewMm(x=600.0, y=300.0, z=8.0)),
        reconSpace=X.encodingSpaceType(matrixSize=X.matrixSizeType(x=nx, y=ny, z=1),
                                       fieldOfView_mm=X.fieldOfViewMm(x=300.0, y=300.0, z=8.0)),
        encodingLimits=X.encodingLimitsType(
            kspace_encoding_step_1=X.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
            slice=X.limitType(minimum=0, maximum=slices - 1, center=0)))
    h = X.ismrmrdHeader(
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        acquisitionSystemInformation=X.acquisitionSystemInformationType(
            receiverChannels=coils, systemFieldStrength_T=1.5),
        encoding=[enc])
    return h.toXML()


def make_case(seed: int = 0, nx: int = 32, ny: int = 32, coils: int = 4, slices: int = 2,
              noise_sigma: float = 0.05, oversampling: int = 2, noise_readouts: int = 32) -> Case:
    """Disc-and-square phantoms under smooth complex coil maps, with a correlated noise scan."""
    rng = np.random.default_rng(seed)
    nx_enc = nx * oversampling
    yy, xx = np.mgrid[-1:1:ny * 1j, -1:1:nx_enc * 1j]
    a = rng.normal(size=(coils, coils)) * 0.3 + np.eye(coils)
    cov = (a @ a.T).astype(np.complex128) * noise_sigma ** 2
    chol = np.linalg.cholesky(cov)
    items: list = []
    whiten = np.linalg.inv(chol)
    for _ in range(noise_readouts):  # noise scan
        acq = ismrmrd.Acquisition.from_array(
            (chol @ (rng.normal(size=(coils, nx_enc)) + 1j * rng.normal(size=(coils, nx_enc))) / np.sqrt(2)
             ).astype(np.complex64))
        acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        acq.sample_time_us = 5.0
        acq.scan_counter = len(items)
        items.append(acq)
    truths = []
    for s in range(slices):
        obj = ((xx * 2 - 0.1 * s) ** 2 + yy ** 2 < 0.5).astype(float) + 0.5 * (
            (np.abs(xx * 2 + 0.3) < 0.2) & (np.abs(yy - 0.2) < 0.3))
        obj[:, : nx_enc // 4] = 0
        obj[:, 3 * nx_enc // 4:] = 0
        centres = np.exp(2j * np.pi * np.arange(coils) / coils)
        maps = np.stack([np.exp(-((xx * 0.5 - c.real) ** 2 + (yy - c.imag) ** 2)) *
                         np.exp(1j * (c.real * xx + c.imag * yy)) for c in centres])
        coil_img = (maps * obj).astype(np.complex64)
        k = fft2c(coil_img)
        crop = slice(nx_enc // 2 - nx // 2, nx_enc // 2 - nx // 2 + nx)
        white = np.tensordot(whiten, coil_img[:, :, crop], axes=1)
        truths.append(np.sqrt(np.sum(np.abs(white) ** 2, axis=0)))
        for line in range(ny):
            noise = (chol @ (rng.normal(size=(coils, nx_enc)) + 1j * rng.normal(size=(coils, nx_enc)))
                     / np.sqrt(2))
            acq = ismrmrd.Acquisition.from_array((k[:, line, :] + noise).astype(np.complex64))
            acq.idx.kspace_encode_step_1 = line
            acq.idx.slice = s
            acq.center_sample = nx_enc // 2
            acq.sample_time_us = 5.0
            acq.scan_counter = len(items)
            acq.acquisition_time_stamp = 1000 * s + line
            acq.position[:] = (0.0, 0.0, 8.0 * s)
            acq.read_dir[:] = (1.0, 0.0, 0.0)
            acq.phase_dir[:] = (0.0, 1.0, 0.0)
            acq.slice_dir[:] = (0.0, 0.0, 1.0)
            if line == 0:
                acq.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
            if line == ny - 1:
                acq.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
            items.append(acq)
    return Case(_header(nx_enc, nx, ny, coils, slices), items, np.stack(truths), cov,
                noise_readouts * nx_enc)


def write_case(path, **kwargs) -> Case:
    case = make_case(**kwargs)
    write_dataset(path, case.header_xml, case.items)
    return case
