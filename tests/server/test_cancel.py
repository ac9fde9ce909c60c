"""A session whose client resets stops its chain at the next item boundary, not at the stream's end."""

from __future__ import annotations

import threading
import time

import ismrmrd
import numpy as np
from reset_client import stream_then_reset

from cmrecon.chain import registry
from cmrecon.chain.registry import NoParams, StepSpec

HEADER = (b"<ismrmrdHeader xmlns='http://www.ismrm.org/ISMRMRD'><encoding><encodedSpace><matrixSize>"
          b"<x>32</x><y>32</y><z>1</z></matrixSize></encodedSpace><reconSpace><matrixSize><x>32</x>"
          b"<y>32</y><z>1</z></matrixSize></reconSpace></encoding></ismrmrdHeader>")
CHAIN = ('<configuration><version>2</version><stream><external>'
         '<execute name="cmrecon_gadgets" target="steps" type="python"/><configuration>'
         '<step name="t_slow"/><step name="t_sink"/></configuration></external></stream></configuration>')


def test_a_client_reset_stops_the_chain_within_a_second(monkeypatch, server):
    done = []

    def slow(items, params, ctx):
        """Buffer everything, then work on it item by item (as unfold or MOCO does per slice)."""
        buffered = list(items)
        for i, _ in enumerate(buffered):
            time.sleep(0.05)
            done.append(i)
            yield {"item": i}

    def sink(items, params, ctx):
        """Consume the products; emit nothing (no write to the client could notice it left)."""
        for _ in items:
            pass
        yield from ()

    monkeypatch.setitem(registry._REGISTRY, "t_slow",
                        StepSpec("t_slow", NoParams, slow, "s", (ismrmrd.Acquisition,), dict))
    monkeypatch.setitem(registry._REGISTRY, "t_sink", StepSpec("t_sink", NoParams, sink, "k", (dict,), ismrmrd.Image))
    # 100 × 0.05 s = 5 s of work once CLOSE has arrived
    readouts = (ismrmrd.Acquisition.from_array(np.zeros((2, 32), np.complex64)) for _ in range(100))
    stream_then_reset(server.port, CHAIN, HEADER, readouts, lambda: len(done) >= 5, "the chain", 10)
    t_reset, at_reset = time.monotonic(), len(done)
    time.sleep(1.5)
    stopped = len(done)
    time.sleep(0.5)
    # within 1 s of the reset (a 0.2 s watch period plus one 0.05 s item) the chain stops for good
    assert len(done) == stopped < at_reset + 25, (at_reset, stopped, len(done))
    assert stopped < 100 and time.monotonic() - t_reset < 5
    assert threading.active_count() < 50
