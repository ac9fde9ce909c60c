"""Session limits: a header's claims are checked before any step allocates from them."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest

from cmrecon.chain.definition import resolve
from cmrecon.chain.limits import SessionLimits, header_counts
from cmrecon.chain.runner import run_chain
from cmrecon.errors import InputError
from cmrecon.io import protocol as P
from cmrecon.server.client import query_server


def _header(matrix: int = 64, coils: int = 4, slices: int = 1) -> bytes:
    return (f"<ismrmrdHeader xmlns='http://www.ismrm.org/ISMRMRD'>"
            f"<acquisitionSystemInformation><receiverChannels>{coils}</receiverChannels></acquisitionSystemInformation>"
            f"<encoding><encodedSpace><matrixSize><x>{2 * matrix}</x><y>{matrix}</y><z>1</z></matrixSize></encodedSpace>"
            f"<reconSpace><matrixSize><x>{matrix}</x><y>{matrix}</y><z>1</z></matrixSize></reconSpace>"
            f"<encodingLimits><slice><minimum>0</minimum><maximum>{slices - 1}</maximum><center>0</center></slice>"
            f"</encodingLimits></encoding></ismrmrdHeader>").encode()


def _readout(slice_: int = 0, coils: int = 4) -> ismrmrd.Acquisition:
    acq = ismrmrd.Acquisition.from_array(np.zeros((coils, 128), np.complex64))
    acq.idx.slice = slice_
    return acq


def test_a_header_claiming_a_4096_matrix_is_refused_before_any_step_runs():
    chain = resolve("fft_rss")
    with pytest.raises(InputError, match=r"encodedSpace matrix x = 8192 is outside this server's limit "
                       r"0\.\.1024 \(--max-matrix\)"):
        next(run_chain(chain, _header(4096), iter([])))
    # the same stream fits where the site raises the limit
    assert header_counts(_header(4096), SessionLimits(max_matrix=8192)) == {"slice": 1}


def test_coils_and_counters_are_bounded_by_the_limits_and_by_the_header():
    with pytest.raises(InputError, match=r"receiverChannels = 512 .* 0\.\.128 \(--max-coils\)"):
        header_counts(_header(coils=512), SessionLimits())
    with pytest.raises(InputError, match=r"slice maximum = 999 claims more than this server's limit of 256"):
        header_counts(_header(slices=1000), SessionLimits())
    chain = resolve("passthrough")
    # a readout outside the header's own declared slices (64 slices under a 1-slice header)
    with pytest.raises(InputError, match=r"readout scan_counter=0 has slice = 5, but the header declares 1 value"):
        list(run_chain(chain, _header(), iter([_readout(0), _readout(5)])))
    with pytest.raises(InputError, match="has 200 channels, over this server's limit of 128"):
        list(run_chain(chain, _header(), iter([_readout(coils=200)])))
    assert len(list(run_chain(chain, _header(), iter([_readout(0)])))) == 1   # the checker passes good data


def test_a_header_that_is_not_xml_is_an_error_naming_it():
    with pytest.raises(InputError, match="the ISMRMRD XML header cannot be parsed"):
        next(run_chain(resolve("passthrough"), b"not xml at all", iter([])))


def test_the_server_answers_an_oversized_header_with_err_and_keeps_serving(server):
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        writer, reader = P.MessageWriter(stream), P.MessageReader(stream)
        writer.write(P.ConfigFile("fft_rss.xml"))
        writer.write(P.Header(_header(4096)))
        writer.write(P.Close())
        writer.flush()
        replies = []
        while True:
            msg = reader.read()
            replies.append(msg)
            if isinstance(msg, P.Close) or msg is None:
                break
        stream.close()
    errors = [m.text for m in replies if isinstance(m, P.Text) and m.text.startswith("ERR")]
    assert errors and "--max-matrix" in errors[0]
    assert query_server("gadgetron::health", "127.0.0.1", server.port, 10) == "ok"   # still serving


def test_buffered_kspace_is_bounded_by_the_sessions_memory_budget():
    """Every header size within its limit, but repeats × sets × coils × matrix over the budget."""
    from cmrecon.chain.runner import run_file
    from cmrecon.io.mrdfile import iter_items, read_header_xml

    from paths import DATA
    h5 = DATA / "sim_lge_r2_embedded.h5"   # 8 coils, 48 × 64 samples, 2 repeats: 1.1 MiB buffered
    chain = resolve("psir_classic")
    # the header declares the repeats, so the whole slice is taken at its first readout
    with pytest.raises(InputError, match=r"slice 0: 2 sets × 2 repeats and calibration \(8 coils × 48 × 64\) needs "
                       r"1\.12 MiB more while this session's buffers hold 0\.00 MiB: over the limit of 1 MiB "
                       r"\(cmrecon serve --max-buffer-mb\)"):
        list(run_chain(chain, read_header_xml(h5), iter_items(h5), limits=SessionLimits(max_buffer_mb=1)))
    assert len(list(run_file(chain, h5))) == 2   # the default budget holds it
