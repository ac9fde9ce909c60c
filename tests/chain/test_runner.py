"""The runner's guards: readouts no acquisition can hold are refused, a non-finite image is an error,
and the session's cancel flag reaches the steps.
"""

from __future__ import annotations

import threading

import ismrmrd
import numpy as np
import pytest

from cmrecon.chain import registry
from cmrecon.chain.definition import build_chain, resolve
from cmrecon.chain.registry import NoParams, StepContext, StepSpec
from cmrecon.chain.runner import MAX_SAMPLE, StepFailure, run_chain
from cmrecon.errors import Cancelled, InputError
from cmrecon.io.mrdfile import iter_items, read_header_xml

from paths import DATA

H5 = DATA / "sim_lge_full.h5"


def _items():
    items = list(iter_items(H5))
    imaging = [a for a in items if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    noise = [a for a in items if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    return items, imaging, noise


def test_a_finite_sample_beyond_the_bound_is_refused_naming_the_readout():
    """A flipped exponent byte made a finite ~1e38 sample: NaN/inf fft_rss images without a word."""
    items, imaging, _ = _items()
    imaging[5].data[2, 7] = 3e38 - 1e38j
    with pytest.raises(InputError, match=rf"readout scan_counter={imaging[5].scan_counter} .* 1 sample\(s\) "
                                         r"beyond 1e\+15 .*the largest of magnitude 3\.2e\+38 in channel 2 at sample 7"):
        list(run_chain(resolve("fft_rss"), read_header_xml(H5), items))


def test_a_huge_noise_readout_is_refused_as_a_noise_readout():
    items, _, noise = _items()
    noise[0].data[0, 0] = 1e20
    with pytest.raises(InputError, match=rf"noise readout scan_counter={noise[0].scan_counter} .*beyond"):
        list(run_chain(resolve("fft_rss"), read_header_xml(H5), items))


def test_samples_within_the_bound_reconstruct_to_finite_images():
    """The bound leaves float32 headroom: a sample at the bound whitens, FFTs and sums to finite pixels."""
    items, imaging, noise = _items()
    imaging[5].data[2, 7] = MAX_SAMPLE * (1 + 1j)
    noise[0].data[0, 0] = MAX_SAMPLE
    images = list(run_chain(resolve("fft_rss"), read_header_xml(H5), items))
    assert images and all(np.isfinite(im.data).all() for im in images)


def _nan_step(items, params, ctx):
    """Consume the readouts; emit one finite image and then one with a NaN pixel, of slice 3."""
    for _ in items:
        pass
    for bad in (False, True):
        img = ismrmrd.Image.from_array(np.ones((8, 8), np.float32))
        img.data[0, 0, 4, 5] = np.nan if bad else 1.0
        img.slice, img.image_index = 3, 1 + bad
        yield img


def test_an_image_with_non_finite_pixels_is_an_error_naming_the_step_and_slice(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "t_nan",
                        StepSpec("t_nan", NoParams, _nan_step, "n", (ismrmrd.Acquisition,), ismrmrd.Image))
    items, _, _ = _items()
    out = []
    with pytest.raises(StepFailure, match=r"step 't_nan' failed: .*image 2 of slice 3 .*1 non-finite pixel"):
        for im in run_chain(build_chain("t", [("t_nan", {})]), read_header_xml(H5), items):
            out.append(im)
    assert len(out) == 1   # the finite image went out; the NaN one did not

def test_steps_see_the_sessions_cancel_flag(monkeypatch):
    seen = []

    def step(items, params, ctx):
        for item in items:
            yield item
            seen.append(ctx.cancelled())   # what a step's numerics would ask between iterations

    monkeypatch.setitem(registry._REGISTRY, "t_look",
                        StepSpec("t_look", NoParams, step, "l", (), registry.Same))
    cancel = threading.Event()
    items, _, _ = _items()
    chain = build_chain("t", [("t_look", {})])
    with pytest.raises(Cancelled):
        for i, _ in enumerate(run_chain(chain, read_header_xml(H5), items, cancel=cancel)):
            if i == 2:
                cancel.set()
    assert seen == [False, False, True]
    assert not StepContext(header_xml=b"").cancelled()   # no flag: never cancelled


@pytest.mark.parametrize("chain_name, recording", [("psir_classic", "sim_lge_r2_embedded.h5"),
                                                   ("psir_classic", "sim_lge_pf_2slice.h5"),
                                                   ("fft_rss", "sim_lge_full.h5")])
def test_blocks_of_readouts_make_the_images_readouts_one_at_a_time_make(chain_name, recording):
    """run_chain hands the per-readout steps blocks of 16 readouts; the images equal those of the
    steps fed one readout at a time (to a few float32 ε: batched products may round differently),
    with the same headers.
    """
    chain, path = resolve(chain_name), DATA / recording
    header = read_header_xml(path)
    blocked = [x for x in run_chain(chain, header, iter_items(path)) if isinstance(x, ismrmrd.Image)]
    ctx = StepContext(header_xml=header)
    stream = iter_items(path)
    for step in chain.steps:   # no packing: every step gets single acquisitions
        stream = registry.get_step(step.name).fn(stream, step.params, ctx)
    single = [x for x in stream if isinstance(x, ismrmrd.Image)]
    assert len(blocked) == len(single) > 0
    for a, b in zip(single, blocked):
        assert bytes(b.getHead()) == bytes(a.getHead()) and b.attribute_string == a.attribute_string
        scale = float(np.abs(a.data.astype(np.float64)).max())
        np.testing.assert_allclose(b.data.astype(np.float64), a.data.astype(np.float64), rtol=0, atol=1e-5 * scale)
