"""Session limits: what a stream's ISMRMRD header (and each readout) may claim before anything is allocated.

A few-hundred-byte header claiming a 4096² matrix made the IR/PD buffer allocate gigabytes, and
64 readouts with 64 ``slice`` values under a 1024² header returned 256 MiB of images. The header is
read leniently here (ElementTree: only the fields that size allocations), checked against
:class:`SessionLimits` before the first step runs, and every readout's counters are checked
against both the limits and the header's own encoding limits.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from cmrecon.errors import InputError

#: ``encodingLimits`` counters and the :class:`SessionLimits` field that bounds each.
_COUNTERS = {"slice": "max_slices", "set": "max_counter", "average": "max_counter",
             "repetition": "max_counter", "phase": "max_counter", "contrast": "max_counter",
             "segment": "max_counter"}


@dataclass(frozen=True)
class SessionLimits:
    """Upper bounds one session may claim; the defaults fit clinical LGE and cine with margin.

    Attributes
    ----------
    max_matrix : encoded or reconstructed matrix per in-plane axis, samples (readout
        oversampling included: 2 × 512 fits).
    max_partitions : matrix along z (3D encodings).
    max_coils : receiver channels.
    max_slices : slices (``slice`` counter values).
    max_counter : values of each other counter (set, average, repetition, phase, contrast, segment).
    max_buffer_mb : k-space the buffering steps (IR/PD, cine) may hold at once, MiB
        (:class:`cmrecon.recon.budget.MemoryBudget`).
    """

    max_matrix: int = field(default=1024, metadata={"doc": "largest matrix per in-plane axis"})
    max_partitions: int = field(default=256, metadata={"doc": "largest matrix along z"})
    max_coils: int = field(default=128, metadata={"doc": "most receiver channels"})
    max_slices: int = field(default=256, metadata={"doc": "most slices"})
    max_counter: int = field(default=256, metadata={"doc": "most values of any other counter"})
    max_buffer_mb: int = field(default=4096, metadata={
        "doc": "most MiB of k-space buffered at once"})


def _int(el: ET.Element | None, tag: str) -> int | None:
    child = el.find(tag) if el is not None else None
    try:
        return int(child.text) if child is not None and child.text is not None else None
    except ValueError:
        raise InputError(f"the ISMRMRD header's <{tag}> is not a whole number: {child.text!r}") from None


def _strip(root: ET.Element) -> ET.Element:
    """Drop XML namespaces so that ``find`` uses bare tag names."""
    for el in root.iter():
        el.tag = el.tag.rsplit("}", 1)[-1]
    return root


def header_counts(header_xml: bytes | str, limits: SessionLimits) -> dict[str, int]:
    """Check the header's sizes against ``limits``; return the counters' declared counts.

    Returns
    -------
    dict
        ``{counter: maximum + 1}`` of the first encoding's declared ``encodingLimits``.

    Raises
    ------
    InputError
        XML that does not parse, a size that is not a whole number, or one over ``limits``
        (the message names the field, its value, the limit and the server option that sets it).
    """
    try:
        root = _strip(ET.fromstring(header_xml))
    except ET.ParseError as exc:
        raise InputError(f"the ISMRMRD XML header cannot be parsed: {exc}") from None
    for i, enc in enumerate(root.findall("encoding")):
        for space in ("encodedSpace", "reconSpace"):
            size = enc.find(f"{space}/matrixSize")
            for axis, bound, option in (("x", limits.max_matrix, "--max-matrix"),
                                        ("y", limits.max_matrix, "--max-matrix"),
                                        ("z", limits.max_partitions, "--max-partitions")):
                n = _int(size, axis)
                if n is not None and not 0 <= n <= bound:
                    raise InputError(f"the header's encoding {i} {space} matrix {axis} = {n} is outside "
                                     f"this server's limit 0..{bound} ({option})")
    coils = _int(root.find("acquisitionSystemInformation"), "receiverChannels")
    if coils is not None and not 0 <= coils <= limits.max_coils:
        raise InputError(f"the header's receiverChannels = {coils} is outside this server's limit "
                         f"0..{limits.max_coils} (--max-coils)")
    counts = {}
    lims = root.find("encoding/encodingLimits")
    for name, attr in _COUNTERS.items():
        top = _int(lims.find(name) if lims is not None else None, "maximum")
        if top is None:
            continue
        bound = getattr(limits, attr)
        if not 0 <= top < bound:
            raise InputError(f"the header's encodingLimits {name} maximum = {top} claims more than this "
                             f"server's limit of {bound} values (--{attr.replace('_', '-')})")
        counts[name] = top + 1
    return counts


def within_limits(items: Iterable, counts: dict[str, int], limits: SessionLimits) -> Iterator:
    """Pass ``items`` on; refuse a readout over ``limits`` or the header's declared ``counts``.

    A readout with more channels than ``max_coils``, or a counter at or beyond the header's
    declared count (:func:`header_counts`; the limit when the header declares none), is an
    :class:`InputError` naming the readout.
    """
    import ismrmrd  # here, not at import: `cmrecon --help` builds the serve options from this module

    bounds = {name: counts.get(name, getattr(limits, attr)) for name, attr in _COUNTERS.items()}
    for item in items:
        if isinstance(item, ismrmrd.Acquisition):
            where = f"readout scan_counter={item.scan_counter}"
            if item.active_channels > limits.max_coils:
                raise InputError(f"{where} has {item.active_channels} channels, over this server's "
                                 f"limit of {limits.max_coils} (--max-coils)")
            if not item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                idx = item.idx
                for name, bound in bounds.items():
                    value = int(getattr(idx, name))
                    if value >= bound:
                        said = "the header declares" if name in counts else "this server allows"
                        raise InputError(f"{where} has {name} = {value}, but {said} {bound} "
                                         f"value(s) (0..{bound - 1})")
        yield item
