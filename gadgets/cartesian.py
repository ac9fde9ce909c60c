"""``fft_rss``: Cartesian FFT and root-sum-of-squares coil combination, one image per stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import ismrmrd
import numpy as np

from cmrecon.axes import centre_crop, shape_yx
from cmrecon.chain.registry import Item, StepContext, register
from cmrecon.io.acquisitions import is_non_imaging
from cmrecon.io.header import encoding_info
from cmrecon.io.images import make_image
from cmrecon.recon.cartesian import Geometry, KspaceAssembler
from cmrecon.recon.fft import ifft2c, rss


@dataclass(frozen=True)
class FftRssParams:
    """Parameters of ``fft_rss``."""

    image_series_index: int = field(default=1, metadata={"doc": "image_series_index of the output"})
    use_calibration: bool = field(default=False, metadata={
        "doc": "include ACQ_IS_PARALLEL_CALIBRATION-only lines (separate ACS) in the image"})


def _key(acq: ismrmrd.Acquisition) -> tuple[int, ...]:
    i = acq.idx
    return (i.slice, i.set, i.average, i.repetition, i.contrast, i.phase)


@register("fft_rss", FftRssParams, consumes=ismrmrd.Acquisition, produces=ismrmrd.Image)
def fft_rss(items: Iterator[Item], params: FftRssParams, ctx: StepContext) -> Iterator[Item]:
    """Reconstruct each slice/set/average/repetition/contrast/phase by FFT and RSS.

    Readouts are placed on a zero-filled Cartesian grid (centre line from the header's
    encoding limits, centre sample from each readout); an image is emitted when its
    ``ACQ_LAST_IN_SLICE`` readout arrives, and any incomplete ones at the end of the stream.
    Images crop to the reconstructed matrix (readout oversampling, if still present, goes here).
    """
    info = None
    open_images: dict[tuple[int, ...], tuple[KspaceAssembler, ismrmrd.Acquisition]] = {}
    counter = 0

    def finish(key: tuple[int, ...]) -> ismrmrd.Image:
        nonlocal counter
        assembler, ref = open_images.pop(key)
        # (y, x), cropped to the recon matrix (readout oversampling not removed upstream goes here)
        image = centre_crop(rss(ifft2c(assembler.kspace)), shape_yx(info.recon_matrix))
        counter += 1
        return make_image(np.ascontiguousarray(image, np.float32), ref, info.recon_fov_mm,
                          series=params.image_series_index, index=counter,
                          meta={"DataRole": "Image", "GADGETRON_DataRole": "Image"})

    for item in items:
        if not isinstance(item, ismrmrd.Acquisition) or is_non_imaging(item):
            if not isinstance(item, ismrmrd.Acquisition):
                yield item
            continue
        if (item.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) and not params.use_calibration):
            continue
        if info is None:
            info = encoding_info(ctx.header)
        key = _key(item)
        if key not in open_images:
            # readouts at most the recon width had their oversampling removed upstream
            enc_x, rec_x = info.encoded_matrix[0], info.recon_matrix[0]
            nx = rec_x if item.number_of_samples <= rec_x else max(enc_x, item.number_of_samples)
            geometry = Geometry((info.encoded_matrix[1], nx), info.center_line)
            open_images[key] = (KspaceAssembler(geometry, item.active_channels), item)
        assembler, ref = open_images[key]
        line = item.idx.kspace_encode_step_1
        assembler.push(np.asarray(item.data), line, item.center_sample)
        if line == info.center_line:
            open_images[key] = (assembler, item)  # the centre line describes the image best
        if item.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE):
            yield finish(key)
    for key in list(open_images):
        ctx.log.warning("fft_rss: stream ended before ACQ_LAST_IN_SLICE of %s; emitting it", key)
        yield finish(key)
