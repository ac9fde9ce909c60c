"""Facts a reconstruction needs from the ISMRMRD XML header, read once and checked."""

from __future__ import annotations

import re
from dataclasses import dataclass

import ismrmrd

from cmrecon.errors import StepError


@dataclass(frozen=True)
class EncodingInfo:
    """The first encoding's matrices and limits.

    Attributes
    ----------
    encoded_matrix : (x, y) encoded matrix (x includes readout oversampling).
    recon_matrix : (x, y) reconstructed matrix.
    recon_fov_mm : (x, y, z) reconstructed field of view in mm.
    center_line : centre of ``kspace_encoding_step_1``.
    """

    encoded_matrix: tuple[int, int]
    recon_matrix: tuple[int, int]
    recon_fov_mm: tuple[float, float, float]
    center_line: int


def encoding_info(header: ismrmrd.xsd.ismrmrdHeader) -> EncodingInfo:
    """Read :class:`EncodingInfo` from a parsed header.

    Raises
    ------
    StepError
        When the header has no encoding, or matrices/limits are missing.
    """
    if not header.encoding:
        raise StepError("the ISMRMRD header has no <encoding> section")
    enc = header.encoding[0]
    try:
        em, rm, fov = enc.encodedSpace.matrixSize, enc.reconSpace.matrixSize, enc.reconSpace.fieldOfView_mm
        encoded = (int(em.x), int(em.y))
        recon = (int(rm.x), int(rm.y))
        fov_mm = (float(fov.x), float(fov.y), float(fov.z))
    except (AttributeError, TypeError) as exc:
        raise StepError(f"the ISMRMRD header's encoding lacks matrix sizes or FOV: {exc}") from exc
    if min(encoded) < 1 or min(recon) < 1:
        raise StepError(f"the ISMRMRD header has an empty matrix: encoded {encoded}, recon {recon}")
    e1 = enc.encodingLimits.kspace_encoding_step_1 if enc.encodingLimits else None
    center = int(e1.center) if e1 is not None and e1.center is not None else encoded[1] // 2
    return EncodingInfo(encoded, recon, fov_mm, center)


def schema_version() -> int:
    """The ISMRMRD XML schema version of the installed ``ismrmrd`` package (its minor version).

    C++ ISMRMRD writes ``ISMRMRD_XMLHDR_VERSION`` = its minor version into ``<version>`` and
    refuses to serialise a header whose ``<version>`` differs ("XML header version does not match
    library schema version", ismrmrd libsrc/xml.cpp); a Gadgetron re-serialises the header for
    every external step, so a mismatching version fails the whole chain there.
    """
    try:
        return int(str(ismrmrd.__version__).split(".")[1])
    except (AttributeError, IndexError, ValueError):
        raise RuntimeError(f"cannot read the ISMRMRD schema version from the installed ismrmrd "
                           f"package version {getattr(ismrmrd, '__version__', '?')!r}") from None


_VERSION_RE = re.compile(rb"<(?:\w+:)?version>\s*(\d+)\s*</(?:\w+:)?version>")


def header_version(header_xml: bytes | str) -> int | None:
    """The ``<version>`` an ISMRMRD XML header declares (None when it declares none)."""
    raw = header_xml.encode("utf-8") if isinstance(header_xml, str) else header_xml
    m = _VERSION_RE.search(raw)
    return int(m.group(1)) if m else None


def version_warning(header_xml: bytes | str) -> str | None:
    """A warning when the header's ``<version>`` is not this installation's schema version.

    No version at all is accepted by every ISMRMRD reader and gives no warning.
    """
    found, ours = header_version(header_xml), schema_version()
    if found is None or found == ours:
        return None
    return (f"the ISMRMRD header declares <version>{found}</version> but this installation's "
            f"schema version is {ours} (ismrmrd {ismrmrd.__version__}); a Gadgetron built with "
            f"ISMRMRD 1.{ours} refuses such a header in its external steps ('XML header version "
            f"does not match library schema version'): write the header with <version>{ours}"
            f"</version> or without one")
