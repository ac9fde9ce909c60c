"""Our steps as Gadgetron external Python gadgets, driven by a harness playing Gadgetron's side
(tests/gadgetron_harness.py)."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest

from cmrecon.io import protocol as P
from cmrecon.io.mrdfile import iter_items, read_header_xml
from cmrecon.server.client import replay_in_process
from gadgetron_harness import play_gadgetron

pytest.importorskip("gadgetron", reason="the optional `gadgetron` package is not installed")


def test_fft_rss_external_matches_in_process(case):
    path, _ = case
    acqs = list(iter_items(path))
    # each external is one step: prewhitening and oversampling run as their own externals
    whitened, rc1, _ = play_gadgetron("noise_prewhiten", "<configuration/>", read_header_xml(path), acqs)
    assert rc1 == 0 and isinstance(whitened[-1], P.Close)
    cropped, rc2, _ = play_gadgetron("remove_oversampling", "<configuration/>", read_header_xml(path), whitened[:-1])
    assert rc2 == 0
    config = '<configuration><property name="image_series_index" value="1"/></configuration>'
    got, rc3, err = play_gadgetron("fft_rss", config, read_header_xml(path), cropped[:-1])
    assert rc3 == 0, err
    images = [m for m in got if isinstance(m, ismrmrd.Image)]
    expected = replay_in_process(path, "fft_rss").images
    assert len(images) == len(expected) == 2
    for a, b in zip(images, expected):
        assert bytes(a.getHead()) == bytes(b.getHead())
        np.testing.assert_array_equal(a.data, b.data)


def test_failing_step_sends_error_before_close_and_exits_nonzero(case):
    path, _ = case
    acqs = list(iter_items(path))
    odd = ismrmrd.Acquisition.from_array(np.zeros((3, 64), np.complex64))
    got, rc, err = play_gadgetron("noise_prewhiten", "<configuration/>", read_header_xml(path),
                                   [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)] + [odd])
    errors = [m for m in got if isinstance(m, P.Error)]
    assert errors and "3 channels, the noise scan had 4" in errors[0].text
    assert rc != 0
    assert isinstance(got[-1], P.Close) and got.index(errors[0]) < len(got) - 1


def test_bad_property_is_an_error_not_a_silent_default(case):
    path, _ = case
    got, rc, _ = play_gadgetron("fft_rss", '<configuration><property name="bogus" value="1"/></configuration>',
                                 read_header_xml(path), [])
    errors = [m for m in got if isinstance(m, P.Error)]
    assert rc != 0 and errors and "unknown parameter(s) bogus" in errors[0].text


def test_unknown_target_is_not_importable():
    import cmrecon_gadgets
    with pytest.raises(AttributeError, match="no step 'system'"):
        getattr(cmrecon_gadgets, "system")
    assert callable(cmrecon_gadgets.fft_rss)
