"""Entry points that let a real Gadgetron run our steps as external Python gadgets.

A chain XML step ``<execute name="cmrecon_gadgets" target="fft_rss" type="python"/>`` makes
Gadgetron spawn ``python -m gadgetron <port> cmrecon_gadgets fft_rss``; the PyPI ``gadgetron``
package connects back, builds its ``Connection`` (CONFIG, then HEADER already read) and calls
``cmrecon_gadgets.fft_rss(connection)``, which resolves to :func:`entry_point`.

What we add over the package (docs/protocol.md): the step's properties are parsed from the
``<configuration>`` Gadgetron sends; the header bytes are passed on exactly as received; and a
failing step sends ERROR (id 8) with its cause before the package's CLOSE, then exits
non-zero, so Gadgetron reports the cause instead of ending the session silently.
"""

from __future__ import annotations

import logging
import struct
import xml.etree.ElementTree as ET
from typing import Any, Callable

from cmrecon.chain.definition import GROUP_TARGET, group_steps, xml_properties
from cmrecon.chain.registry import StepContext, get_step
from cmrecon.chain.runner import StepFailure, _guard
from cmrecon.errors import CmreconError
from cmrecon.threads import limit_blas_threads

log = logging.getLogger("cmrecon.gadgetron")
ERROR_ID = 8


def _configuration(connection: Any) -> ET.Element | None:
    """The ``<configuration>`` element Gadgetron sent (None when it sent nothing)."""
    config = getattr(connection, "config", None)
    if config is None:
        raw = getattr(getattr(connection, "raw_bytes", None), "config", None)
        if raw and raw.strip(b"\x00 \n"):
            raise CmreconError(f"the step configuration Gadgetron sent is not XML: {raw[:200]!r}")
        return None
    if isinstance(config, (bytes, str)):
        config = ET.fromstring(config)
    if config.tag != "configuration":
        found = config.find(".//configuration")
        config = found if found is not None else config
    return config


def send_error(connection: Any, text: str) -> None:
    """Write an ERROR (8) message: ``uint16 id, uint64 length, text`` on the connection's socket."""
    raw = text.encode("utf-8")
    connection.socket.write(struct.pack("<HQ", ERROR_ID, len(raw)) + raw)


def run_step_on_connection(step_name: str, connection: Any) -> None:
    """Run one registered step (or, for ``target="steps"``, a group) over a Gadgetron ``Connection``.

    Raises
    ------
    SystemExit
        Exit status 1 after ERROR was sent, when a step or its configuration failed.
    """
    limit_blas_threads()   # the same BLAS policy as run_chain: same speed, same rounding
    try:
        where = f"Gadgetron external '{step_name}'"
        config = _configuration(connection)
        group = (group_steps(config, where) if step_name == GROUP_TARGET
                 else [(step_name, xml_properties(config, where))])
        ctx = StepContext(header_xml=connection.raw_bytes.header.rstrip(b"\x00"), log=log)
        stream = iter(connection)
        for name, raw in group:
            spec = get_step(name)
            stream = _guard(name, spec.fn(stream, spec.make_params(raw, where=f"{where} step '{name}'"), ctx))
        for item in stream:
            connection.send(item)
    except (StepFailure, CmreconError) as exc:
        message = str(exc) if isinstance(exc, StepFailure) else f"step '{step_name}': {exc}"
        log.error("%s", message)
        send_error(connection, message)
        raise SystemExit(1) from exc
    except Exception as exc:  # a defect in our code: still tell Gadgetron why
        message = f"step '{step_name}' crashed: {type(exc).__name__}: {exc}"
        log.exception("%s", message)
        send_error(connection, message)
        raise SystemExit(1) from exc


def entry_point(step_name: str) -> Callable[[Any], None]:
    """The callable Gadgetron's Python runner invokes for ``target=<step_name>``."""

    def target(connection: Any) -> None:
        run_step_on_connection(step_name, connection)

    target.__name__ = step_name
    target.__doc__ = f"Gadgetron external entry point of cmrecon step '{step_name}'."
    return target
