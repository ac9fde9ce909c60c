"""A client that resets while the server reconstructs a cine slice (L+S) stops that slice's
iterations, not only the chain at the next slice: the session's chain thread is freed.

The slice is given far more L+S iterations than it can run before the test's reset (tol 0, 2000
iterations: minutes of CPU), so the chain can only end early if the iterations themselves
observed the cancel flag. Asserted: the step ended with Cancelled raised inside the L+S
iterations, after a handful of them; the server serves the next client.
"""

from __future__ import annotations

import re
import threading

from reset_client import stream_then_reset

from cmrecon.chain import registry
from cmrecon.chain.registry import StepSpec
from cmrecon.errors import Cancelled
from cmrecon.io.mrdfile import iter_items, read_header_xml
from cmrecon.server.client import query_server

from paths import DATA

H5 = DATA / "sim_cine_r8_kt_2slice.h5"
ITERATIONS = 2000
CHAIN = ('<configuration><version>2</version><stream><external>'
         '<execute name="cmrecon_gadgets" target="steps" type="python"/><configuration>'
         '<step name="noise_prewhiten"/><step name="remove_oversampling"/><step name="buffer_cine"/>'
         '<step name="cine_coil_maps"/>'
         f'<step name="cine_lps"><property name="iterations" value="{ITERATIONS}"/>'
         '<property name="tol" value="0"/></step>'
         '<step name="emit_cine"/></configuration></external></stream></configuration>')


def test_a_client_reset_during_lps_stops_the_slices_iterations(monkeypatch, server, gram_calls):
    grams = gram_calls
    ended, finished = [], threading.Event()
    lps_step = registry.get_step("cine_lps")

    def watched(items, params, ctx):
        try:
            yield from lps_step.fn(items, params, ctx)
        except BaseException as exc:
            ended.append(exc)
            raise
        finally:
            finished.set()
    monkeypatch.setitem(registry._REGISTRY, "cine_lps", StepSpec(
        "cine_lps", lps_step.params_type, watched, lps_step.summary, lps_step.consumes, lps_step.produces))

    stream_then_reset(server.port, CHAIN, read_header_xml(H5), iter_items(H5), lambda: len(grams) >= 5,
                      "L+S", 60)
    at_reset = len(grams)

    assert finished.wait(120), "the L+S step did not end"   # a bound against hanging, not a timing
    assert len(ended) == 1 and isinstance(ended[0], Cancelled), ended
    stopped = re.search(rf"L\+S \(ist\) stopped as asked after (\d+) of at most {ITERATIONS}", str(ended[0]))
    assert stopped, ended[0]   # inside the iterations, not at the next item boundary
    done = int(stopped.group(1))
    assert at_reset <= done < ITERATIONS // 4 and len(grams) == done   # the first slice's L+S, cut short
    assert query_server("gadgetron::health", "127.0.0.1", server.port, 10) == "ok"
