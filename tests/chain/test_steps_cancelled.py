"""The session's cancel flag reaches a cine step's iterations: set after k iterations of one
slice's reconstruction, the step stops within one iteration with Cancelled (not at the slice's end).

Each case runs the registered step on a slice of the recorded R 8 cine stream as the shipped
chains' front end hands it over; the flag is an Event that reads as set from its (k+1)-th
question on, and the work per iteration is counted where it is done once.
"""

from __future__ import annotations

import threading

import pytest
import torch

from cmrecon.chain.registry import StepContext, get_step
from cmrecon.chain.runner import run_file
from cmrecon.errors import Cancelled
from cmrecon.recon import cine, cine_inr
from cmrecon_gadgets.cine_steps import cine_front_chain

from paths import DATA

K = 3   # the flag reads as set from the 4th question on


class SetAfter(threading.Event):
    """A cancel flag that reads as set from its ``(k+1)``-th question on; counts the questions."""

    def __init__(self, k: int):
        super().__init__()
        self.k, self.asked = k, 0

    def is_set(self) -> bool:
        self.asked += 1
        return self.asked > self.k or super().is_set()


@pytest.fixture(scope="module")
def mapped():
    """The first slice's CineMapped product (12 phases, 6 coils, 64², R 8 kt)."""
    return next(iter(run_file(cine_front_chain(), DATA / "sim_cine_r8_kt_2slice.h5")))


def _counting(monkeypatch, cls, name="__call__"):
    calls = []
    orig = getattr(cls, name)

    def counted(self, *args, **kwargs):
        calls.append(1)
        return orig(self, *args, **kwargs)
    monkeypatch.setattr(cls, name, counted)
    return calls


@pytest.mark.parametrize("step, raw, per_iteration", [
    ("cine_lps", {"iterations": 50, "tol": 0.0}, cine.CineGram),
    ("cine_lps", {"iterations": 50, "tol": 0.0, "method": "pogm"}, cine.CineGram),
    ("cine_sense", {"iterations": 30, "tol": 0.0}, cine.CineGram),
    ("cine_inr", {"iterations": 150, "device": "cpu"}, cine_inr.SampledSense),
])
def test_a_cancel_set_after_k_iterations_stops_the_step_within_one(monkeypatch, mapped, step, raw, per_iteration):
    spec = get_step(step)
    work = _counting(monkeypatch, per_iteration)
    cancel = SetAfter(K)
    ctx = StepContext(header_xml=b"", cancel=cancel)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(Cancelled, match=f"stopped as asked after {K} of at most {raw['iterations']} iterations"):
            list(spec.fn(iter([mapped]), spec.make_params(raw), ctx))
    finally:
        torch.set_num_threads(threads)   # cine_inr applies the process's thread policy
    assert cancel.asked == K + 1
    assert K <= len(work) <= K + 1, len(work)


def test_without_a_cancel_the_step_runs_its_iterations(monkeypatch, mapped):
    work = _counting(monkeypatch, cine.CineGram)
    spec = get_step("cine_lps")
    (out,) = spec.fn(iter([mapped]), spec.make_params({"iterations": 6, "tol": 0.0}),
                     StepContext(header_xml=b"", cancel=threading.Event()))
    assert out.provenance["iterations"] == 6 and len(work) == 6
