"""A chain as Gadgetron 4 chain XML that reconstructs each slice on a worker Gadgetron.

Gadgetron's ``<distributed>`` node (``apps/gadgetron/connection/nodes/Distributed.cpp``) hands
the acquisitions to a *distributor*; ``AcquisitionDistributor`` (library
``gadgetron_core_distributed``) opens one connection to a worker Gadgetron for every new value of
one header index (``parallel_dimension``), sends that worker the ``<distributed>`` block's
readers, writers and ``<stream>`` as its configuration, and merges what the workers send back
into the main stream. :func:`to_distributed_xml` writes::

    <configuration><version>2</version>
      <readers>AcquisitionReader, WaveformReader</readers>  <writers>ImageWriter</writers>
      <stream>
        <external>noise_prewhiten</external>          (main server: sees the whole session)
        <distributed>
          <readers>AcquisitionReader, ImageReader</readers>
          <writers>AcquisitionWriter, ImageWriter</writers>
          <distributor>AcquisitionDistributor, parallel_dimension=slice</distributor>
          <stream><external>the rest of the chain</external></stream>   (one worker per slice)
        </distributed>
      </stream>
    </configuration>

Why the chain is cut before the distributor: the noise scan's readouts carry slice index 0, so
only the worker of slice 0 would see them, and ``noise_prewhiten`` on every other slice would stop
with "no noise scan" (its default) or pass data unwhitened. The steps up to and including the last
``noise_prewhiten`` therefore run once, on the main server, and the prewhitened readouts are
distributed. Both externals are exactly what :func:`cmrecon.chain.definition.to_xml` writes for
their part of the chain.

Only ``slice`` is accepted: every chain reconstructs a slice from all of its readouts (an LGE
slice's IR and PD sets and repeats, a cine slice's phases), and every other index Gadgetron can
distribute by would send readouts of one slice to different workers.

A stock Gadgetron 4.7.2 cannot run the result: when it forwards the inner stream to a worker it
drops the ``target`` attribute and the ``<configuration>`` of every ``<external>`` (docs/gadgetron.md,
"Distributed runs", has the two-line fix and what was checked).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from cmrecon.chain.definition import Chain, to_xml
from cmrecon.errors import ChainError

DISTRIBUTOR_DLL = "gadgetron_core_distributed"
DISTRIBUTOR_CLASS = "AcquisitionDistributor"
#: steps that must see the whole session (the noise scan arrives with slice index 0)
SESSION_STEPS = ("noise_prewhiten",)

#: Every header index Gadgetron's AcquisitionDistributor selects by
#: (core/distributed/AcquisitionDistributor.cpp), with why each but ``slice`` breaks our chains.
_REPEATS = ("an LGE slice's repeats, counted in average or repetition, are buffered, registered "
            "and averaged together, and its key frame is chosen among them")
_LINES = "one image's readouts would be split between workers"
_SPLITS_A_SLICE = {
    "average": _REPEATS,
    "repetition": _REPEATS,
    "set": "an LGE slice's IR (set 0) and PD (set 1) images are needed together for PSIR",
    "phase": "a cine slice's cardiac phases are reconstructed together",
    "contrast": _LINES,
    "segment": _LINES,
    "kspace_encode_step_1": _LINES,
    "kspace_encode_step_2": _LINES,
    **{f"user_{i}": _LINES for i in range(8)},
}
PARALLEL_DIMENSIONS = ("slice",)


def _check_dimension(parallel_dimension: str) -> None:
    if parallel_dimension in PARALLEL_DIMENSIONS:
        return
    if parallel_dimension in _SPLITS_A_SLICE:
        raise ChainError(f"parallel_dimension '{parallel_dimension}' would send readouts of one slice "
                         f"to different workers: {_SPLITS_A_SLICE[parallel_dimension]}; only "
                         "'slice' keeps each slice on one worker")
    known = ", ".join(["slice", *_SPLITS_A_SLICE])
    raise ChainError(f"parallel_dimension '{parallel_dimension}' is not an index Gadgetron's "
                     f"{DISTRIBUTOR_CLASS} knows ({known}); use 'slice'")


def split_session_front(chain: Chain) -> tuple[Chain | None, Chain]:
    """The chain cut after its last session-wide step: ``(front or None, per-slice rest)``.

    Raises
    ------
    ChainError
        Nothing is left to distribute after the session-wide steps.
    """
    cut = max((i + 1 for i, s in enumerate(chain.steps) if s.name in SESSION_STEPS), default=0)
    if cut == len(chain.steps):
        raise ChainError(f"chain '{chain.name}' has no step after "
                         f"{chain.steps[cut - 1].name} to distribute by slice")
    front = replace(chain, steps=chain.steps[:cut]) if cut else None
    return front, replace(chain, steps=chain.steps[cut:])


def _external(chain: Chain) -> ET.Element:
    """The single ``<external>`` that :func:`to_xml` writes for ``chain``."""
    externals = ET.fromstring(to_xml(chain)).findall("stream/external")
    if len(externals) != 1:   # to_xml writes one external per chain (definition._external_groups)
        raise ChainError(f"chain '{chain.name}' is {len(externals)} externals; expected one")
    return externals[0]


def _classes(parent: ET.Element, section: str, tag: str, dll: str, classes: tuple[str, ...]) -> None:
    el = ET.SubElement(parent, section)
    for cls in classes:
        item = ET.SubElement(el, tag)
        ET.SubElement(item, "dll").text = dll
        ET.SubElement(item, "classname").text = cls


def to_distributed_xml(chain: Chain, parallel_dimension: str = "slice") -> str:
    """Render a chain as Gadgetron chain XML (version 2) that reconstructs each slice on a worker.

    Parameters
    ----------
    chain : the chain; its session-wide front (``noise_prewhiten``) runs on the main server, the
        rest once per slice on a worker (see the module docstring).
    parallel_dimension : the acquisition header index the ``AcquisitionDistributor`` splits by;
        only ``"slice"``.

    Returns
    -------
    The XML text, ending in a newline.

    Raises
    ------
    ChainError
        Another ``parallel_dimension`` (naming what it would split), or a chain with nothing
        after its session-wide steps.
    """
    _check_dimension(parallel_dimension)
    front, per_slice = split_session_front(chain)
    root = ET.fromstring(to_xml(chain))          # the same version, readers and writers as to_xml
    stream = root.find("stream")
    for child in list(stream):
        stream.remove(child)
    if front is not None:
        stream.append(_external(front))
    dist = ET.SubElement(stream, "distributed")
    # The main server writes acquisitions to a worker and reads its images (or, for passthrough,
    # acquisitions) back; the worker gets these same lists as its own readers and writers.
    _classes(dist, "readers", "reader", "gadgetron_core_readers", ("AcquisitionReader", "ImageReader"))
    _classes(dist, "writers", "writer", "gadgetron_core_writers", ("AcquisitionWriter", "ImageWriter"))
    distributor = ET.SubElement(dist, "distributor")
    ET.SubElement(distributor, "dll").text = DISTRIBUTOR_DLL
    ET.SubElement(distributor, "classname").text = DISTRIBUTOR_CLASS
    ET.SubElement(distributor, "property", name="parallel_dimension", value=parallel_dimension)
    ET.SubElement(dist, "stream").append(_external(per_slice))
    ET.indent(root)
    note = (f"<!-- one worker Gadgetron per {parallel_dimension}. Needs a Gadgetron whose config "
            "serializer keeps <execute target> and the external's <configuration> when it forwards "
            "the inner stream to the workers (4.7.2 drops both): cmrecon docs/gadgetron.md, "
            "'Distributed runs'. -->")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + note + "\n"
            + ET.tostring(root, encoding="unicode") + "\n")
