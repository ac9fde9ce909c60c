"""Run a chain: compose its steps' generators between a source of MRD items and a sink.

The same function serves our TCP server, ``cmrecon replay --in-process`` and tests: items are
pulled through the chain one at a time, so an image leaves as soon as its slice is complete.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import ismrmrd
import numpy as np

from cmrecon.chain.definition import Chain
from cmrecon.chain.limits import SessionLimits, header_counts, within_limits
from cmrecon.chain.registry import Item, StepContext, get_step
from cmrecon.errors import Cancelled, CmreconError, InputError, ProtocolError, StepError
from cmrecon.io.acquisitions import pack_readouts, unpack_readouts
from cmrecon.recon.budget import MemoryBudget

MRD_OUTPUT_TYPES = (ismrmrd.Image, ismrmrd.Acquisition, ismrmrd.Waveform)


class StepFailure(CmreconError):
    """A step raised while processing the stream; names the step and the cause."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        super().__init__(f"step '{step}' failed: {type(cause).__name__}: {cause}")


def _until_cancelled(where: str, items: Iterator[Item], cancel: threading.Event | None) -> Iterator[Item]:
    """``items``, raising :class:`Cancelled` at the first item after ``cancel`` is set (no extra
    stage per step when there is nothing to cancel: library calls, the Gadgetron external).
    """
    if cancel is None:
        return items

    def checked() -> Iterator[Item]:
        for item in items:
            if cancel.is_set():
                raise Cancelled(f"the client is gone; the chain stopped after {where}")
            yield item
    return checked()


def _guard(name: str, stage: Iterator[Item]) -> Iterator[Item]:
    """Re-raise anything a stage raises as :class:`StepFailure` naming it (once, innermost wins)."""
    try:
        yield from stage
    except (StepFailure, InputError, ProtocolError, Cancelled):   # not this step's fault
        raise
    except GeneratorExit:
        raise
    except Exception as exc:
        raise StepFailure(name, exc) from exc


#: The largest real or imaginary part a readout's sample may have (arbitrary units, as received).
#: No acquisition comes near it: a 24-bit ADC gives at most 2**23 ≈ 8e6 counts, and vendors'
#: float scalings keep raw samples within about 1e-9 ... 1e8; but a flipped exponent byte turns
#: a sample into anything up to float32's maximum 3.4e38, which the first sum of squares a
#: reconstruction takes (noise covariance, whitening, RSS, a norm) overflows to inf, then NaN.
#: The bound leaves float32 headroom for those sums: with |Re|, |Im| ≤ 1e15, |x|² ≤ 2e30, and a sum
#: of N ≤ 1e8 such squares (a noise scan of 1e4 readouts × 1e4 samples, or every coil sample of
#: a slice) stays ≤ 2e38 < 3.4e38. (Whitening multiplies by 1/σ_noise; data whose samples are
#: that many noise σ are not an acquisition either, and the image check of :func:`run_chain` is
#: the last line of defence.)
MAX_SAMPLE = 1e15


def _describe(item: ismrmrd.Acquisition) -> str:
    idx = item.idx
    kind = "noise " if item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) else ""
    return (f"{kind}readout scan_counter={item.scan_counter} (slice {idx.slice}, set {idx.set}, "
            f"line {idx.kspace_encode_step_1})")


def finite_readouts(items: Iterable[Item]) -> Iterator[Item]:
    """Pass items on; an acquisition with a NaN, infinite or huge sample is an :class:`InputError`.

    One NaN readout made an all-NaN ``fft_rss`` image, one NaN noise readout constant PSIR
    images; a finite sample of ~1e38 (a flipped exponent byte) overflowed in whitening, the FFT
    and the RSS to NaN/inf images. Refused here, before any step, with the readout named: a
    real or imaginary part that is not finite or exceeds :data:`MAX_SAMPLE` (see there why).
    """
    for item in items:
        if isinstance(item, ismrmrd.Acquisition):
            data = np.asarray(item.data)
            parts = data.view(data.real.dtype) if np.iscomplexobj(data) and data.flags.c_contiguous else data
            # one pass each, no temporary; NaN propagates through max and min
            if parts.size and not max(float(parts.max()), -float(parts.min())) <= MAX_SAMPLE:
                finite = np.isfinite(data)
                if not finite.all():
                    bad = np.argwhere(~finite)
                    raise InputError(
                        f"{_describe(item)} has {len(bad)} non-finite sample(s), the first in channel "
                        f"{bad[0][0]} at sample {bad[0][1]}")
                big = np.maximum(np.abs(data.real), np.abs(data.imag))
                worst = np.unravel_index(np.argmax(big), big.shape)
                raise InputError(
                    f"{_describe(item)} has {int((big > MAX_SAMPLE).sum())} sample(s) beyond "
                    f"{MAX_SAMPLE:.0e} in its real or imaginary part (no acquisition holds such values; "
                    f"a corrupt exponent?), the largest of magnitude {float(abs(data[worst])):.1e} in channel "
                    f"{worst[0]} at sample {worst[1]}")
        yield item


def _finite_image(item: Item, step: str) -> None:
    """An MRD image leaving the chain with a NaN or infinite pixel: :class:`StepFailure` naming
    the step that emitted it and the image (slice, index, series).
    """
    if isinstance(item, ismrmrd.Image) and np.issubdtype(item.data.dtype, np.inexact):
        finite = np.isfinite(item.data)
        if not finite.all():
            raise StepFailure(step, StepError(
                f"image {item.image_index} of slice {item.slice} (series {item.image_series_index}, "
                f"repetition {item.repetition}, phase {item.phase}) has {int(finite.size - finite.sum())} "
                f"non-finite pixel(s) of {finite.size}; not sent"))


def compose(steps: Iterable[Any], stream: Iterator[Item], ctx: StepContext,
            wrap: Callable[[str, Iterator[Item]], Iterator[Item]] | None = None) -> Iterator[Item]:
    """Stack the generators of ``steps`` (:class:`~cmrecon.chain.definition.StepConfig`) over ``stream``.

    Imaging readouts travel as :class:`~cmrecon.io.acquisitions.AcquisitionBlock` between
    steps registered with ``blocks=True`` (packed before the first of a run of them, unpacked
    before a step that takes single acquisitions and at the end), so the per-readout steps
    transform 16 readouts per call; every other step sees the acquisitions as they came.
    ``wrap(name, stage)`` wraps each step's generator (error naming, cancellation, timing).
    """
    packed = False
    for step in steps:
        spec = get_step(step.name)
        if spec.blocks != packed:
            stream = pack_readouts(stream) if spec.blocks else unpack_readouts(stream)
            packed = spec.blocks
        stage = spec.fn(stream, step.params, ctx)
        stream = wrap(step.name, stage) if wrap is not None else stage
    return unpack_readouts(stream) if packed else stream


def run_chain(chain: Chain, header_xml: bytes, items: Iterable[Item],
              log: logging.Logger | None = None, limits: SessionLimits | None = None,
              cancel: threading.Event | None = None) -> Iterator[Item]:
    """Stream ``items`` through every step of ``chain``; yield what the last step emits.

    Parameters
    ----------
    chain : a loaded chain.
    header_xml : the ISMRMRD XML header as received (bytes, not re-serialised).
    items : acquisitions/waveforms/images in stream order (may be a lazy socket reader).
    limits : what the header and readouts may claim (default :class:`SessionLimits`); checked
        before the first step runs.
    cancel : set when the client is gone: every step stops at its next item boundary (between
        readouts, between slices) with :class:`Cancelled`; steps see it as
        :meth:`StepContext.cancelled`, and the iterative reconstructions (``cine_sense``,
        ``cine_lps``, ``cine_inr``) check it once per iteration, so a slice's reconstruction
        stops within one iteration.

    Yields
    ------
    MRD items (images, or passed-through acquisitions/waveforms); a chain front built with
    ``ends_in_mrd=False`` yields its last step's products as they are.

    Raises
    ------
    InputError
        A header or readout over ``limits``, or a non-finite sample.
    StepFailure
        A step raised; the message names it. A step emitting a non-MRD item at the chain's end
        is reported the same way.
    """
    limits = limits or SessionLimits()
    ctx = StepContext(header_xml=header_xml, log=log or logging.getLogger("cmrecon.chain"),
                      budget=MemoryBudget(limits.max_buffer_mb << 20, "cmrecon serve --max-buffer-mb"),
                      cancel=cancel)
    counts = header_counts(header_xml, limits)   # before any step allocates from the header
    stream: Iterator[Item] = _until_cancelled("reading", finite_readouts(within_limits(items, counts, limits)), cancel)
    stream = compose(chain.steps, stream, ctx,
                     lambda name, stage: _until_cancelled(f"step '{name}'", _guard(name, stage), cancel))
    last = chain.steps[-1].name
    for item in stream:
        if chain.ends_in_mrd and not isinstance(item, MRD_OUTPUT_TYPES):
            raise StepFailure(last, StepError(
                f"the chain ends with a {type(item).__name__}, which is not an MRD image, "
                "acquisition or waveform; add a step that emits images"))
        _finite_image(item, last)
        yield item


def run_file(chain: Chain, path: str | Path, group: str = "dataset") -> Iterator[Item]:
    """Run a chain over a raw ISMRMRD HDF5 dataset in-process (no socket)."""
    from cmrecon.io.mrdfile import iter_items, read_header_xml
    return run_chain(chain, read_header_xml(path, group), iter_items(path, group))
