"""Helpers for the LGE step tests: run a prefix of a chain's steps and collect its products."""

from __future__ import annotations

import copy
from typing import Any

import ismrmrd

from cmrecon.chain.registry import StepContext, get_step

PREFIX = ("noise_prewhiten", "remove_oversampling", "buffer_ir_pd", "coil_maps", "unfold")


def run_steps(case: Any, steps: list[tuple[str, dict]]) -> list[Any]:
    """Run registered steps (name, raw params) over a SimCase's items; return what comes out."""
    ctx = StepContext(header_xml=case.header_xml.encode())
    stream = iter(copy.deepcopy(case.items))
    for name, raw in steps:
        spec = get_step(name)
        stream = spec.fn(stream, spec.make_params(raw), ctx)
    return list(stream)


def slices(case: Any, upto: str = "unfold", **overrides: dict) -> list[Any]:
    """The products (one per slice) after prewhiten → … → ``upto``, with parameter overrides."""
    names = PREFIX[:PREFIX.index(upto) + 1]
    steps = [(n, dict(overrides.get(n, {}))) for n in names]
    out = [x for x in run_steps(case, steps) if not isinstance(x, ismrmrd.Acquisition)]
    assert out, "no slice came out of the buffer"
    return out
