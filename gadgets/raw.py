"""Steps on raw readouts: ``noise_prewhiten`` and ``remove_oversampling``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import ismrmrd
import numpy as np

from cmrecon.chain.registry import Item, NoParams, StepContext, register
from cmrecon.errors import StepError
from cmrecon.io.acquisitions import AcquisitionBlock, head_copy
from cmrecon.io.header import encoding_info
from cmrecon.recon.cartesian import remove_readout_oversampling
from cmrecon.recon.noise import noise_covariance, prewhitening_matrix


@dataclass(frozen=True)
class PrewhitenParams:
    """Parameters of ``noise_prewhiten``."""

    on_missing_noise: str = field(default="error", metadata={
        "doc": "what to do when imaging data arrive with no noise scan before them: 'error' "
               "stops the stream; 'identity' passes data unwhitened and logs a warning "
               "(images are then not in SNR units)",
        "choices": ("error", "identity")})


#: noise samples kept for the covariance (24 noise readouts of 32 MiB once held 800 MB); 64 MiB is
#: 128 coils × 65,536 complex samples, far more than a covariance estimate needs
MAX_NOISE_BYTES = 64 * 2**20


def _readouts_named(block: AcquisitionBlock) -> str:
    """``readout scan_counter=N`` or ``readouts scan_counter=N…M`` for error messages."""
    first, last = block.heads[0].scan_counter, block.heads[-1].scan_counter
    return f"readout scan_counter={first}" if len(block) == 1 else f"readouts scan_counter={first}…{last}"


def _as_block(item: Item) -> AcquisitionBlock | None:
    """An imaging readout or block as a block (a single acquisition as a block of one); else None."""
    if isinstance(item, AcquisitionBlock):
        return item
    if isinstance(item, ismrmrd.Acquisition):
        return AcquisitionBlock.of(item)
    return None


def _as_given(block: AcquisitionBlock, given: Item) -> Item:
    """``block`` in the form ``given`` came in: a block, or the one acquisition it holds."""
    return block if isinstance(given, AcquisitionBlock) else block.acquisitions()[0]


@register("noise_prewhiten", PrewhitenParams, consumes=ismrmrd.Acquisition, blocks=True)
def noise_prewhiten(items: Iterator[Item], params: PrewhitenParams, ctx: StepContext) -> Iterator[Item]:
    """Estimate coil noise covariance from the noise scan and prewhiten every later readout.

    Noise readouts (``ACQ_IS_NOISE_MEASUREMENT``) are consumed (ones arriving after imaging has
    started are dropped with a warning); imaging readouts are scaled by
    sqrt(imaging dwell / noise dwell) so that per-sample noise is unit variance. Readouts come
    one at a time or in blocks (:class:`~cmrecon.io.acquisitions.AcquisitionBlock`: one matrix
    product per readout, no per-readout objects) and leave as they came.
    """
    noise: list[np.ndarray] = []
    noise_bytes, noise_full = 0, False
    noise_dwell = None
    whitening = None
    decided = False
    for item in items:
        if isinstance(item, ismrmrd.Acquisition) and item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            if decided:  # as Gadgetron's NoiseAdjustGadget: only the scan before imaging counts
                ctx.log.warning("noise_prewhiten: dropped a noise readout (scan_counter=%d) that "
                                "arrived after imaging data", item.scan_counter)
                continue
            data = np.asarray(item.data)
            if noise_bytes + data.nbytes > MAX_NOISE_BYTES:   # memory stays bounded
                if not noise_full:
                    ctx.log.warning("noise_prewhiten: noise scan over %d MiB; later noise readouts are "
                                    "not used", MAX_NOISE_BYTES >> 20)
                noise_full = True
                continue
            noise.append(data)
            noise_bytes += data.nbytes
            noise_dwell = float(item.sample_time_us) or None
            continue
        block = _as_block(item)
        if block is None:
            yield item
            continue
        if not decided:
            decided = True
            if noise:
                cov = noise_covariance(np.concatenate(noise, axis=1))
                img_dwell = float(block.heads[0].sample_time_us) or None
                ratio = img_dwell / noise_dwell if (img_dwell and noise_dwell) else 1.0
                whitening = prewhitening_matrix(cov, dwell_ratio=ratio)
                ctx.log.info("noise_prewhiten: %d coils from %d noise samples, dwell ratio %.3f",
                             cov.shape[0], sum(n.shape[1] for n in noise), ratio)
            elif params.on_missing_noise == "error":
                raise StepError("no noise scan (ACQ_IS_NOISE_MEASUREMENT readouts) precedes the "
                                "imaging data; set on_missing_noise=identity to reconstruct "
                                "without prewhitening")
            else:
                ctx.log.warning("noise_prewhiten: no noise scan; data pass unwhitened "
                                "(on_missing_noise=identity)")
        if whitening is not None:
            if block.data.shape[1] != whitening.shape[0]:
                raise StepError(f"{_readouts_named(block)} has {block.data.shape[1]} channels, the "
                                f"noise scan had {whitening.shape[0]}")
            # new arrays (never whiten the caller's); the headers are shared, unchanged
            item = _as_given(AcquisitionBlock(block.heads, np.matmul(whitening, block.data),
                                              block.traj.copy()), item)
        yield item


@register("remove_oversampling", NoParams, consumes=ismrmrd.Acquisition, blocks=True)
def remove_oversampling(items: Iterator[Item], params: NoParams, ctx: StepContext) -> Iterator[Item]:
    """Crop readout oversampling in image space so readouts match the reconstructed FOV.

    A readout of the encoded length (``encodedSpace.matrixSize.x``) is cropped to
    ``reconSpace.matrixSize.x`` samples; readouts of other lengths pass unchanged, as do noise
    readouts. A block of readouts is cropped by one batch of transforms.
    """
    info = None
    for item in items:
        block = (None if isinstance(item, ismrmrd.Acquisition) and item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
                 else _as_block(item))
        if block is None:
            yield item
            continue
        if info is None:
            info = encoding_info(ctx.header)
        n_enc, n_rec = info.encoded_matrix[0], info.recon_matrix[0]
        if block.data.shape[2] != n_enc or n_rec >= n_enc:
            yield item
            continue
        heads = []
        for h in block.heads:
            head = head_copy(h)
            head.number_of_samples = n_rec
            head.center_sample = h.center_sample * n_rec // n_enc
            head.discard_pre = 0
            head.discard_post = 0
            heads.append(head)
        cropped = np.ascontiguousarray(remove_readout_oversampling(block.data, n_rec), np.complex64)
        traj = np.zeros((len(heads), n_rec, block.traj.shape[2]), np.float32)
        yield _as_given(AcquisitionBlock(tuple(heads), cropped, traj), item)
