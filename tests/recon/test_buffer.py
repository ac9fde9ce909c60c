"""IrPdBuffer: the release rule, clear errors for broken IR/PD streams, bounded memory.

Pure array tests (no ismrmrd): readouts are built by hand as :class:`Readout` records.
"""

from __future__ import annotations

import numpy as np
import pytest

from cmrecon.errors import StepError
from cmrecon.recon.buffer import IrPdBuffer, Readout, acs_block, estimate_acceleration

KY, KX, COILS = 16, 8, 3
CENTRE = KY // 2


def _shot(slice_: int, set_: int, repeat: int, lines, coils: int = COILS, acs=(), value=None):
    """Readouts of one heartbeat in ascending line order; the last has LAST_IN_SLICE."""
    out = []
    for i, line in enumerate(lines):
        data = np.full((coils, KX), value if value is not None else 100 * set_ + 10 * repeat + line,
                       np.complex64)
        out.append(Readout(data=data, slice=slice_, set=set_, repeat=repeat, line=line,
                           center_sample=KX // 2, calibration=line in acs, imaging=True,
                           last_in_slice=i == len(lines) - 1, ref=("hdr", slice_, set_, repeat, line)))
    return out


def _buffer(repeats=2, R=2):
    return IrPdBuffer(KY, CENTRE, (KX, KY), (300.0, 300.0, 8.0), expected_repeats=repeats,
                      acceleration=R)


LINES_R2 = sorted(set(range(0, KY, 2)) | set(range(CENTRE - 3, CENTRE + 3)))
ACS = tuple(range(CENTRE - 3, CENTRE + 3))


def test_slice_is_released_exactly_at_the_last_readout_of_the_last_set_and_repeat():
    buf = _buffer(repeats=2)
    stream = [r for rep in range(2) for s in (0, 1) for r in _shot(0, s, rep, LINES_R2, acs=ACS)]
    released = []
    for i, r in enumerate(stream):
        out = buf.push(r)
        if i < len(stream) - 1:
            assert out == [], f"released early at readout {i}"
        released += out
    assert len(released) == 1 and buf.open_slices == []
    sl = released[0]
    assert sl.ir.shape == sl.pd.shape == (2, COILS, KY, KX)
    assert sl.ir.dtype == np.complex64
    assert sl.info.repeats == (0, 1) and sl.acceleration == 2
    # data landed on the right rows: value = 100·set + 10·repeat + line
    assert sl.pd[1, 0, CENTRE, 0] == 100 + 10 + CENTRE
    assert sl.ir[0, 0, 4, 0] == 4
    assert np.array_equal(np.flatnonzero(sl.mask_pe), LINES_R2)
    # the ACS block is symmetric about the centre row (k = 0 on row ay // 2), mean over repeats
    assert np.array_equal(sl.calibration.rows, np.arange(CENTRE - 3, CENTRE + 3))
    assert sl.calibration.pd.shape == (COILS, 6, KX)
    assert sl.calibration.pd[0, 3, 0] == pytest.approx(100 + 5 + CENTRE)  # mean of repeats 0 and 1
    # the reference header is the readout nearest the k-space centre, per set and repeat
    assert sl.info.refs[1][1] == ("hdr", 0, 1, 1, CENTRE)
    assert buf.flush() == []


def test_released_slices_are_dropped_and_later_slices_are_independent():
    buf = _buffer(repeats=1)
    out = [s for r in _shot(0, 0, 0, LINES_R2) + _shot(0, 1, 0, LINES_R2) for s in buf.push(r)]
    assert [s.info.slice for s in out] == [0] and buf.open_slices == []
    buf.push(_shot(1, 0, 0, LINES_R2)[0])
    assert buf.open_slices == [1]          # memory held: only the open slice
    with pytest.raises(StepError, match="slice 0 .*after that slice was complete and released"):
        buf.push(_shot(0, 0, 0, LINES_R2)[0])


def test_unknown_repeat_count_releases_at_flush_only():
    buf = IrPdBuffer(KY, CENTRE, (KX, KY), (300.0, 300.0, 8.0), expected_repeats=None)
    for rep in range(3):
        for s in (0, 1):
            for r in _shot(0, s, rep, list(range(KY))):
                assert buf.push(r) == []
    (sl,) = buf.flush()
    assert sl.info.repeats == (0, 1, 2) and sl.acceleration == 1 and sl.calibration.pd is None


def test_missing_pd_partner_is_a_clear_error():
    buf = _buffer(repeats=2)
    for r in _shot(0, 0, 0, LINES_R2) + _shot(0, 1, 0, LINES_R2) + _shot(0, 0, 1, LINES_R2):
        buf.push(r)
    with pytest.raises(StepError, match=r"slice 0: repeat\(s\) \[1\] have an IR \(set 0\) but no PD partner"):
        buf.flush()


def test_missing_ir_partner_is_a_clear_error():
    buf = _buffer(repeats=1)
    for r in _shot(0, 1, 0, LINES_R2):
        buf.push(r)
    with pytest.raises(StepError, match="have a PD .set 1. but no IR partner"):
        buf.flush()


def test_fewer_repeats_than_declared_is_an_error_at_flush():
    buf = _buffer(repeats=3)
    for r in _shot(0, 0, 0, LINES_R2) + _shot(0, 1, 0, LINES_R2):
        buf.push(r)
    with pytest.raises(StepError, match="ended with 1 IR/PD repeats .* declare 3"):
        buf.flush()


def test_set_count_other_than_two_is_an_error():
    with pytest.raises(StepError, match="exactly two sets .* declare 3"):
        IrPdBuffer(KY, CENTRE, (KX, KY), (1.0, 1.0, 1.0), num_sets=3)
    buf = _buffer()
    r = _shot(0, 0, 0, LINES_R2)[0]
    with pytest.raises(StepError, match="has set 2; the IR/PD chains expect set 0 .IR. and set 1 .PD."):
        buf.push(Readout(**{**r.__dict__, "set": 2}))


def test_mismatched_coils_and_repeat_outside_limits_are_errors():
    buf = _buffer(repeats=2)
    buf.push(_shot(0, 0, 0, LINES_R2)[0])
    with pytest.raises(StepError, match="has 5 coils, earlier readouts had 3"):
        buf.push(_shot(0, 1, 0, LINES_R2, coils=5)[0])
    with pytest.raises(StepError, match="repeat 2, outside the 2 repeats"):
        buf.push(_shot(0, 0, 2, LINES_R2)[0])
    with pytest.raises(StepError, match="encode step 99 falls outside"):
        buf.push(Readout(**{**_shot(0, 0, 0, [0])[0].__dict__, "line": 99}))


def test_acs_block_and_acceleration_estimate():
    counts = np.zeros(KY, int)
    counts[5:12] = 2                       # rows 5..11: symmetric half-width about 8 is 3
    acs_sum = np.ones((2, KY, 4), np.complex64) * counts[None, :, None]
    block, rows = acs_block(acs_sum, counts)
    assert np.array_equal(rows, np.arange(5, 11)) and np.allclose(block, 1)
    assert acs_block(acs_sum, np.zeros(KY, int))[0] is None
    mask = np.zeros(KY, bool)
    mask[1::3] = True
    assert estimate_acceleration(mask) == 3


def test_embedded_calibration_keeps_each_heartbeats_own_acs_rows():
    """The chosen repeat's calibration rows are that heartbeat's, not the mean over repeats."""
    acs = tuple(r for r in ACS if r % 2)  # off the R = 2 grid: calibration-only readouts
    def shot(set_, rep):
        out = _shot(0, set_, rep, list(range(0, KY, 2)), acs=ACS)  # on-grid ACS rows: both
        for line in acs:  # calibration-only rows inside the same heartbeat
            out.insert(0, Readout(data=np.full((COILS, KX), 1000 * set_ + 100 * rep + line, np.complex64),
                                  slice=0, set=set_, repeat=rep, line=line, center_sample=KX // 2,
                                  calibration=True, imaging=False))
        return out
    for mode, keeps in (("embedded", True), ("separate", False)):
        buf = IrPdBuffer(KY, CENTRE, (KX, KY), (300.0, 300.0, 8.0), expected_repeats=2,
                         acceleration=2, calibration_mode=mode)
        got = []
        for rep in range(2):
            for set_ in (0, 1):
                for r in shot(set_, rep):
                    got += buf.push(r)
        (sl,) = got
        assert sl.calibration.mode == mode
        if not keeps:
            assert sl.calibration.per_repeat is None
            continue
        assert sl.calibration.per_repeat.shape == (2, 2, COILS, len(sl.calibration.rows), KX)
        for j, row in enumerate(sl.calibration.rows):
            for set_ in (0, 1):
                for rep in range(2):
                    expect = (1000 * set_ + 100 * rep + row) if row in acs else (100 * set_ + 10 * rep + row)
                    assert sl.calibration.per_repeat[set_, rep, 0, j, 0] == expect


def test_repeat_counter_auto_numbers_average_and_repetition_layouts():
    from types import SimpleNamespace as NS

    from cmrecon_gadgets.lge_steps import repeat_indexer

    def lim(n):
        return NS(minimum=0, maximum=n - 1)
    avg_layout = NS(average=lim(4), repetition=lim(1))
    rep_layout = NS(average=lim(1), repetition=lim(4))
    for limits in (avg_layout, rep_layout):
        index_of, expected = repeat_indexer("auto", limits)
        assert expected == 4
        idxs = [NS(average=k, repetition=0) if limits is avg_layout else NS(average=0, repetition=k)
                for k in range(4)]
        assert [index_of(i) for i in idxs] == [0, 1, 2, 3]
    # both counters in use: a repeat is a (repetition, average) pair
    index_of, expected = repeat_indexer("auto", NS(average=lim(2), repetition=lim(3)))
    assert expected == 6
    assert sorted(index_of(NS(average=a, repetition=r)) for a in range(2) for r in range(3)) == list(range(6))
    # forcing one counter: the other is ignored, and the header count is that counter's
    index_of, expected = repeat_indexer("average", rep_layout)
    assert expected == 1 and index_of(NS(average=0, repetition=3)) == 0


def test_asymmetric_echo_lands_on_its_columns_and_a_repeated_line_replaces_the_earlier_whole():
    """A readout with k = 0 at sample 2 (asymmetric echo) fills columns 2..7 with samples 0..5,
    columns 0..1 stay zero; a line sent again (a re-acquisition) replaces the earlier row whole,
    it is not added to or merged with it.
    """
    buf = _buffer(repeats=1, R=1)
    full = [r for s in (0, 1) for r in _shot(0, s, 0, range(KY))]
    # set 0, line 3 first as a centred readout of 7s, then again with k = 0 at sample 2
    again = Readout(data=np.arange(1, KX + 1, dtype=np.complex64)[None].repeat(COILS, 0), slice=0, set=0,
                    repeat=0, line=3, center_sample=2, ref=("hdr",))
    first = Readout(data=np.full((COILS, KX), 7, np.complex64), slice=0, set=0, repeat=0, line=3,
                    center_sample=KX // 2)
    out = []
    for r in [first, again] + full[:3] + full[4:]:   # full[3] (line 3 of set 0) is replaced above
        out += buf.push(r)
    (sl,) = out
    np.testing.assert_array_equal(sl.ir[0, 1, 3], [0, 0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(sl.ir[0, :, 4], np.full((COILS, KX), 4))


def test_budget_takes_a_declared_slice_whole_at_its_first_readout_and_an_undeclared_one_per_heartbeat():
    """With the repeat count declared the slice's heartbeats are one array, taken from the budget
    at the first readout and released as views (no copy); without it each heartbeat is taken
    when it starts. Either way the same k-space comes out and the budget is given back.
    """
    from cmrecon.errors import InputError
    from cmrecon.recon.budget import MemoryBudget

    heartbeat = COILS * KY * KX * 8
    stream = [r for rep in range(2) for s in (0, 1) for r in _shot(0, s, rep, LINES_R2, acs=ACS)]
    out = {}
    for repeats in (2, None):
        budget = MemoryBudget(None)
        buf = IrPdBuffer(KY, CENTRE, (KX, KY), (300.0, 300.0, 8.0), expected_repeats=repeats,
                         acceleration=2, budget=budget)
        buf.push(stream[0])
        assert budget.held == (6 if repeats else 3) * heartbeat   # calibration: two heartbeats' worth
        released = [s for r in stream[1:] for s in buf.push(r)] + buf.flush()
        assert budget.held == 0 and len(released) == 1
        out[repeats] = released[0]
    np.testing.assert_array_equal(out[2].ir, out[None].ir)
    np.testing.assert_array_equal(out[2].pd, out[None].pd)
    assert out[2].ir.base is not None and out[2].ir.base is out[2].pd.base   # views of one array
    small = IrPdBuffer(KY, CENTRE, (KX, KY), (300.0, 300.0, 8.0), expected_repeats=2,
                       budget=MemoryBudget(5 * heartbeat))
    with pytest.raises(InputError, match=r"slice 0: 2 sets × 2 repeats and calibration \(3 coils × 16 × 8\)"):
        small.push(stream[0])
    per_heartbeat = IrPdBuffer(KY, CENTRE, (KX, KY), (300.0, 300.0, 8.0), expected_repeats=None,
                               budget=MemoryBudget(5 * heartbeat))
    with pytest.raises(InputError, match=r"slice 0 set 1 repeat 1 \(3 coils × 16 × 8\)"):
        for r in stream:
            per_heartbeat.push(r)
