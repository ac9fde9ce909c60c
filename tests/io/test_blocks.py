"""Blocks of readouts: how pack_readouts groups a stream, and that unpacking gives it back."""

from __future__ import annotations

import ismrmrd
import numpy as np

from cmrecon.io.acquisitions import BLOCK_READOUTS, AcquisitionBlock, pack_readouts, unpack_readouts


def _acq(n: int, samples: int = 8, flags: tuple[int, ...] = (), traj_dims: int = 0) -> ismrmrd.Acquisition:
    data = (np.arange(3 * samples) + 1j * n).reshape(3, samples).astype(np.complex64)
    traj = np.full((samples, traj_dims), n, np.float32) if traj_dims else None
    acq = ismrmrd.Acquisition.from_array(data, traj)
    acq.scan_counter = n
    for f in flags:
        acq.set_flag(f)
    return acq


def _shape(items) -> list:
    """Each item as 'noise', 'other', or the block's scan counters."""
    out = []
    for x in items:
        if isinstance(x, AcquisitionBlock):
            out.append([h.scan_counter for h in x.heads])
        elif isinstance(x, ismrmrd.Acquisition):
            out.append(f"single {x.scan_counter}")
        else:
            out.append(x)
    return out


def test_runs_are_packed_up_to_the_block_size_and_cut_after_an_image_ends():
    stream = ([_acq(0, flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,))]
              + [_acq(n) for n in range(1, 21)]
              + [_acq(21, flags=(ismrmrd.ACQ_LAST_IN_SLICE,)), _acq(22), "waveform", _acq(23),
                 _acq(24, samples=16), _acq(25, traj_dims=2), _acq(26, flags=(ismrmrd.ACQ_IS_NAVIGATION_DATA,)),
                 _acq(27, flags=(ismrmrd.ACQ_LAST_IN_REPETITION,)), _acq(28)])
    assert BLOCK_READOUTS == 16
    assert _shape(pack_readouts(iter(stream))) == [
        "single 0",                       # noise scans are not image data
        list(range(1, 17)),               # full block
        list(range(17, 22)),              # cut after ACQ_LAST_IN_SLICE
        [22], "waveform",                 # another item ends the run
        [23], [24],                       # a readout of another length starts a new block
        "single 25", "single 26",         # trajectories and navigators pass one by one
        [27], [28]]                       # cut after ACQ_LAST_IN_REPETITION; the end flushes


def test_unpacking_gives_back_the_stream_with_its_own_headers_and_samples():
    stream = [_acq(n, flags=(ismrmrd.ACQ_LAST_IN_SLICE,) if n == 5 else ()) for n in range(20)]
    stream.insert(7, "image")
    stream.append(_acq(20, traj_dims=3))
    packed = list(pack_readouts(iter(stream)))
    assert any(isinstance(b, AcquisitionBlock) and len(b) > 1 for b in packed)
    back = list(unpack_readouts(iter(packed)))
    assert len(back) == len(stream)
    for a, b in zip(stream, back):
        if not isinstance(a, ismrmrd.Acquisition):
            assert a == b
            continue
        assert bytes(b._head) == bytes(a._head)
        np.testing.assert_array_equal(b.data, a.data)
        np.testing.assert_array_equal(b.traj, a.traj)
        if isinstance(b, ismrmrd.Acquisition) and b is not a:   # an unpacked readout owns its header
            assert b._head is not a._head
