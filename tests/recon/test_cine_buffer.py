"""CineBuffer: segmented cine readouts → one CineKspace per slice, released at the right moment."""

from __future__ import annotations

import numpy as np
import pytest

from cmrecon.errors import StepError
from cmrecon.recon.cine_buffer import CineBuffer, CineReadout, row_spacing

T, C, KY, KX, R = 4, 3, 16, 8, 2
CENTRE = KY // 2
ACS = np.arange(CENTRE - 2, CENTRE + 2)


def masks(kind: str) -> np.ndarray:
    """(T, KY) rows: every R-th row through the centre (shifted by the phase for kt) plus ACS."""
    m = np.zeros((T, KY), bool)
    for p in range(T):
        shift = p if kind == "kt" else 0
        m[p, [k for k in range(KY) if (k - CENTRE - shift) % R == 0]] = True
        m[p, ACS] = True
    return m


def readouts(kspace: np.ndarray, mask: np.ndarray, slice_: int = 0, segment: int = 3,
             last_flag: str = "slice") -> list[CineReadout]:
    """Segmented order: heartbeat h reads segment h of every phase; LAST_IN_SLICE as asked."""
    rows = [np.flatnonzero(m) for m in mask]
    beats = max(-(-len(r) // segment) for r in rows)
    out = []
    for h in range(beats):
        for p in range(T):
            seg = rows[p][h * segment:(h + 1) * segment]
            for j, row in enumerate(seg):
                out.append(CineReadout(kspace[p, :, row], slice_, p, int(row), KX // 2,
                                       calibration=bool(row in ACS), trigger_ms=p * 50.0 + j * 3.0,
                                       ref=(p, int(row))))
    if last_flag == "slice":
        r = out[-1]
        out[-1] = CineReadout(r.data, r.slice, r.phase, r.line, r.center_sample, r.calibration, True,
                              r.trigger_ms, r.ref)
    elif last_flag == "phase":   # each phase's last readout flagged (another scanner convention)
        for p in range(T):
            i = max(i for i, r in enumerate(out) if r.phase == p)
            r = out[i]
            out[i] = CineReadout(r.data, r.slice, r.phase, r.line, r.center_sample, r.calibration, True,
                                 r.trigger_ms, r.ref)
    return out


@pytest.fixture
def kspace() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((T, C, KY, KX)) + 1j * rng.standard_normal((T, C, KY, KX))).astype(np.complex64)


@pytest.mark.parametrize("kind", ["equispaced", "kt"])
def test_a_slice_is_the_sampled_kspace_released_on_its_last_readout(kspace, kind):
    m = masks(kind)
    buf = CineBuffer(KY, CENTRE, (KX, KY), (200.0, 200.0, 8.0), expected_phases=T)
    ro = readouts(kspace, m)
    released = [s for r in ro[:-1] for s in buf.push(r)]
    assert released == [] and buf.open_slices == [0]
    [sl] = buf.push(ro[-1])
    assert buf.open_slices == [] and buf.flush() == []
    np.testing.assert_array_equal(sl.mask, m)
    np.testing.assert_array_equal(sl.kspace, kspace * m[:, None, :, None])
    assert sl.acceleration == R == row_spacing(m, sl.calibration_rows)
    np.testing.assert_array_equal(np.flatnonzero(sl.calibration_rows), ACS)
    assert sl.info.phases == tuple(range(T))
    # each phase's reference is its readout nearest the centre, with that readout's trigger time
    assert [ref for ref in sl.info.refs] == [(p, CENTRE) for p in range(T)]
    assert np.all(np.diff(sl.info.trigger_times_ms) > 0)


def test_per_phase_last_flags_release_only_after_the_last_phase(kspace):
    m = masks("equispaced")
    buf = CineBuffer(KY, CENTRE, (KX, KY), (200.0, 200.0, 8.0), expected_phases=T)
    ro = readouts(kspace, m, last_flag="phase")
    out = [(i, s) for i, r in enumerate(ro) for s in buf.push(r)]
    assert [i for i, _ in out] == [len(ro) - 1]
    np.testing.assert_array_equal(out[0][1].kspace, kspace * m[:, None, :, None])


def test_a_row_read_twice_in_a_phase_is_averaged(kspace):
    m = masks("equispaced")
    buf = CineBuffer(KY, CENTRE, (KX, KY), (200.0, 200.0, 8.0), expected_phases=T)
    ro = readouts(kspace, m)
    again = CineReadout(3 * kspace[0, :, CENTRE], 0, 0, CENTRE, KX // 2, calibration=True)
    for r in [again] + ro:
        released = buf.push(r)
    np.testing.assert_allclose(released[0].kspace[0, :, CENTRE], 2 * kspace[0, :, CENTRE], rtol=1e-6)


def test_multislice_streams_release_each_slice_and_flush_the_unflagged_rest(kspace):
    m = masks("kt")
    buf = CineBuffer(KY, CENTRE, (KX, KY), (200.0, 200.0, 8.0), expected_phases=T)
    out = [s for r in readouts(kspace, m, slice_=0) + readouts(kspace, m, 1, last_flag="none")
           for s in buf.push(r)]
    assert [s.info.slice for s in out] == [0] and buf.open_slices == [1]
    [rest] = buf.flush()
    assert rest.info.slice == 1


def test_bad_streams_are_errors_that_name_the_problem(kspace):
    m = masks("equispaced")
    buf = CineBuffer(KY, CENTRE, (KX, KY), (200.0, 200.0, 8.0), expected_phases=T)
    with pytest.raises(StepError, match="cardiac phase 4, outside the 4 phases"):
        buf.push(CineReadout(kspace[0, :, 0], 0, 4, 0, KX // 2))
    buf.push(CineReadout(kspace[0, :, 0], 0, 0, 0, KX // 2))
    with pytest.raises(StepError, match="2 coils"):
        buf.push(CineReadout(kspace[0, :2, 0], 0, 1, 0, KX // 2))
    with pytest.raises(StepError, match=r"without cardiac phase\(s\) \[1, 2, 3\]"):
        buf.flush()
    done = CineBuffer(KY, CENTRE, (KX, KY), (200.0, 200.0, 8.0), expected_phases=T)
    for r in readouts(kspace, m):
        done.push(r)
    with pytest.raises(StepError, match="after that slice was complete"):
        done.push(CineReadout(kspace[0, :, 0], 0, 0, 0, KX // 2))


def test_a_session_over_its_memory_budget_is_refused_before_the_allocation(kspace):
    """Each header size passes on its own; the product is bounded by the session's budget."""
    from cmrecon.errors import InputError
    from cmrecon.recon.budget import MemoryBudget
    per_phase = C * KY * KX * 8
    budget = MemoryBudget(3 * per_phase)
    buf = CineBuffer(KY, CENTRE, (KX, KY), (200.0, 200.0, 8.0), expected_phases=T, budget=budget)
    for p in range(3):
        buf.push(CineReadout(kspace[p, :, 0], 0, p, 0, KX // 2))
    assert budget.held == 3 * per_phase
    with pytest.raises(InputError, match=r"cine slice 0 phase 3 \(3 coils × 16 × 8\) needs 0\.00 MiB more .* over the limit of"):
        buf.push(CineReadout(kspace[3, :, 0], 0, 3, 0, KX // 2))
    # a released slice gives its bytes back
    ok = CineBuffer(KY, CENTRE, (KX, KY), (200.0, 200.0, 8.0), expected_phases=T,
                    budget=MemoryBudget(T * per_phase))
    for r in readouts(kspace, masks("kt")):
        ok.push(r)
    assert ok.budget.held == 0
