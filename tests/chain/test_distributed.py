"""Distributed Gadgetron XML: nested as Gadgetron 4's parser needs, the chain exactly, slices only.

The structure checks follow Gadgetron 4.7.2's own parser, apps/gadgetron/connection/config/Config.cpp
(class V2): a stream's element children must be one of its node parsers (``node_parsers.at`` throws
for any other name); ``parse_distributed`` reads ``<readers>``, ``<writers>``, ``<distributor>``
(``<dll>``, ``<classname>``, ``<property name= value=>``) and ``<stream>``; ``parse_external``
needs an ``<execute>`` or ``<connect>`` child. The distributor is ``AcquisitionDistributor`` in
``gadgetron_core_distributed`` (core/distributed/AcquisitionDistributor.cpp,
core/distributed/CMakeLists.txt). No Gadgetron runs here: docs/gadgetron.md says what was checked.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

import ismrmrd
import numpy as np
import pytest

from cmrecon import cli
from cmrecon.chain.definition import build_chain, list_chains, load_xml, resolve, to_xml
from cmrecon.chain.distributed import split_session_front, to_distributed_xml
from cmrecon.chain.runner import StepFailure, run_chain
from cmrecon.errors import ChainError
from cmrecon.io.mrdfile import iter_items, read_header_xml

from paths import DATA

# Config.cpp, V2::V2: the element names a <stream> may hold
GADGETRON_STREAM_NODES = {"gadget", "parallel", "external", "distributed", "parallelprocess", "puredistributed"}


def _classnames(parent: ET.Element, path: str) -> list[str]:
    return [el.findtext("classname") for el in parent.findall(path)]


def _externals_in_order(root: ET.Element) -> list[ET.Element]:
    """The externals a session passes through: the main stream's, then the workers'."""
    out = []
    for node in root.find("stream"):
        out.extend([node] if node.tag == "external" else node.findall("stream/external"))
    return out


def _chain_of(externals: list[ET.Element], name: str):
    """The chain those externals run, through our own loader (a plain v2 chain of them)."""
    doc = ET.Element("configuration")
    ET.SubElement(doc, "version").text = "2"
    ET.SubElement(doc, "stream").extend(externals)
    return load_xml(ET.tostring(doc), name)


@pytest.mark.parametrize("name", list_chains())
def test_distributed_xml_nests_as_gadgetrons_v2_parser_reads_it(name):
    root = ET.fromstring(to_distributed_xml(resolve(name)))
    assert root.tag == "configuration" and root.findtext("version") == "2"      # V2::accepts
    plain = ET.fromstring(to_xml(resolve(name)))          # the client-facing readers/writers as to_xml
    assert _classnames(root, "readers/reader") == _classnames(plain, "readers/reader")
    assert _classnames(root, "writers/writer") == _classnames(plain, "writers/writer")
    for stream in root.iter("stream"):
        assert {child.tag for child in stream} <= GADGETRON_STREAM_NODES
    [dist] = root.findall("stream/distributed")
    assert [child.tag for child in dist] == ["readers", "writers", "distributor", "stream"]
    # the main server writes acquisitions to a worker and reads images back; the worker gets these
    # same lists as its own readers/writers (nodes/common/Configuration.cpp), so it reads
    # acquisitions and writes images with them
    assert _classnames(dist, "readers/reader") == ["AcquisitionReader", "ImageReader"]
    assert _classnames(dist, "writers/writer") == ["AcquisitionWriter", "ImageWriter"]
    assert {el.findtext("dll") for el in dist.iter("reader")} == {"gadgetron_core_readers"}
    assert {el.findtext("dll") for el in dist.iter("writer")} == {"gadgetron_core_writers"}
    distributor = dist.find("distributor")
    assert distributor.findtext("dll") == "gadgetron_core_distributed"
    assert distributor.findtext("classname") == "AcquisitionDistributor"
    assert [p.attrib for p in distributor.findall("property")] == [{"name": "parallel_dimension", "value": "slice"}]
    for ext in root.iter("external"):
        [execute] = ext.findall("execute")
        assert execute.get("name") == "cmrecon_gadgets" and execute.get("type") == "python"
        assert execute.get("target")


@pytest.mark.parametrize("name", list_chains())
def test_main_server_and_workers_together_run_exactly_the_chain(name):
    chain = resolve(name)
    root = ET.fromstring(to_distributed_xml(chain))
    assert _chain_of(_externals_in_order(root), name).steps == chain.steps
    front, per_slice = split_session_front(chain)
    [inner] = root.findall("stream/distributed/stream/external")
    [inner_as_to_xml] = ET.fromstring(to_xml(per_slice)).findall("stream/external")
    assert ET.canonicalize(ET.tostring(inner), strip_text=True) == \
        ET.canonicalize(ET.tostring(inner_as_to_xml), strip_text=True)
    assert "noise_prewhiten" not in [s.name for s in per_slice.steps]
    assert [el.tag for el in root.find("stream")] == (["distributed"] if front is None
                                                      else ["external", "distributed"])


def test_the_chain_is_cut_after_its_last_noise_prewhiten():
    chain = build_chain("late_noise", [("remove_oversampling", {}), ("noise_prewhiten", {}), ("fft_rss", {})])
    front, rest = split_session_front(chain)
    assert [s.name for s in front.steps] == ["remove_oversampling", "noise_prewhiten"]
    assert [s.name for s in rest.steps] == ["fft_rss"]
    with pytest.raises(ChainError, match="no step after noise_prewhiten to distribute"):
        to_distributed_xml(build_chain("noise_only", [("noise_prewhiten", {})]))


@pytest.mark.parametrize("dimension, why", [
    ("repetition", "repeats"), ("average", "repeats"), ("set", "IR \\(set 0\\) and PD \\(set 1\\)"),
    ("phase", "cardiac phases"), ("kspace_encode_step_1", "one image's readouts"),
])
def test_dimensions_that_split_a_slice_are_refused_saying_what_they_split(dimension, why):
    with pytest.raises(ChainError, match=f"'{dimension}' would send readouts of one slice to different "
                                         f"workers: .*{why}.*only 'slice'"):
        to_distributed_xml(resolve("psir_moco"), dimension)


def test_a_dimension_gadgetron_does_not_know_is_refused_listing_the_ones_it_does():
    with pytest.raises(ChainError, match="'slices' is not an index .*AcquisitionDistributor knows "
                                         "\\(slice, average, repetition, set, phase"):
        to_distributed_xml(resolve("fft_rss"), "slices")


def test_cli_prints_what_the_function_writes_and_refuses_other_dimensions(capsys):
    assert cli.main(["chains", "xml", "psir_moco", "--distributed"]) == 0
    assert capsys.readouterr().out == to_distributed_xml(resolve("psir_moco"))
    assert cli.main(["chains", "xml", "psir_moco", "--distributed", "--parallel-dimension", "slice"]) == 0
    assert capsys.readouterr().out == to_distributed_xml(resolve("psir_moco"))
    assert cli.main(["chains", "xml", "psir_moco", "--distributed", "--parallel-dimension", "set"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "'set' would send readouts of one slice" in captured.err
    assert cli.main(["chains", "xml", "psir_moco", "--parallel-dimension", "slice"]) == 2
    assert "--parallel-dimension needs --distributed" in capsys.readouterr().err


def _distribute(front, worker, header: bytes, items: list) -> list[ismrmrd.Image]:
    """Run ``front`` (None: nothing) on the whole session and ``worker`` once per slice, in-process.

    As Gadgetron's <distributed> block routes the data: the main stream's external sees the whole
    session; its acquisitions are grouped by ``idx.slice`` as ``AcquisitionDistributor`` does,
    and each group runs through the worker's external on its own (a worker session with the same
    header); anything else bypasses the workers (``TypedDistributor<Acquisition>``).
    """
    front_out = list(run_chain(front, header, iter(items))) if front else items
    by_slice: dict[int, list] = defaultdict(list)
    for item in front_out:
        if isinstance(item, ismrmrd.Acquisition):
            by_slice[item.idx.slice].append(item)
    return [img for group in by_slice.values() for img in run_chain(worker, header, iter(group))]


def test_slices_on_separate_workers_give_the_images_of_the_whole_chain():
    path = DATA / "sim_lge_pf_2slice.h5"
    header, items = read_header_xml(path), list(iter_items(path))
    noise = [a for a in items if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    assert noise and {a.idx.slice for a in noise} == {0}     # why prewhitening stays in front
    chain = resolve("psir_classic")
    whole = list(run_chain(chain, header, iter(items)))
    root = ET.fromstring(to_distributed_xml(chain))
    [main] = root.findall("stream/external")
    [inner] = root.findall("stream/distributed/stream/external")
    split = _distribute(_chain_of([main], "main"), _chain_of([inner], "worker"), header, items)

    def key(img):
        return img.image_series_index, img.slice, img.image_index

    assert sorted(map(key, split)) == sorted(map(key, whole)) and {img.slice for img in whole} == {0, 1}
    ref = {key(img): img for img in whole}
    for img in split:
        assert np.array_equal(img.data, ref[key(img)].data)   # the same arithmetic, slice by slice

    # the whole chain on every worker (no front): slice 1's worker gets no noise scan and stops
    with pytest.raises(StepFailure, match="no noise scan"):
        _distribute(None, chain, header, items)
