"""A bounded fuzzer (200 mutated sessions, seconds): every session answered, none hangs, no
internal error, good sessions still get their images, and the server keeps serving.
"""

from __future__ import annotations

from fuzz_sessions import fuzz, summary

from cmrecon.server.client import query_server


def test_two_hundred_mutated_sessions_are_each_answered_and_the_server_keeps_serving(server):
    outcomes = fuzz(server.port, 200, seed=14)
    counts = summary(outcomes)
    assert not [o for o in outcomes if o.result == "hang"], counts
    assert not [o for o in outcomes if "internal" in o.detail], [o for o in outcomes if "internal" in o.detail][:3]
    valid = [o for o in outcomes if o.kind == "valid"]
    assert len(valid) == 20 and all(o.result == "images" for o in valid), counts
    matrix = [o for o in outcomes if o.kind == "matrix"]
    assert matrix and all(o.result == "err" and "--max-matrix" in o.detail for o in matrix), matrix[:3]
    assert query_server("gadgetron::health", "127.0.0.1", server.port, 10) == "ok"
