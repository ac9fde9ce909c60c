"""The one registry of chain steps, and typed step parameters.

A step is a generator stage ``fn(items, params, ctx) -> items`` over MRD items (acquisitions,
waveforms, images) registered once under one name. That name is the XML ``<execute target=…>``,
the YAML ``step:`` key, what our server runs and what ``cmrecon replay --in-process`` runs.

Parameters are frozen dataclasses; each field documents itself through
``field(metadata={"doc": ..., "choices": (...)})``. Strings from XML and values from YAML are
parsed once, when a chain is built; unknown keys and bad values are :class:`ChainError`.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import ismrmrd

from cmrecon.errors import ChainError
from cmrecon.params import describe_params, params_to_strings, parse_params  # noqa: F401

Item = Any  # ismrmrd.Acquisition | ismrmrd.Waveform | ismrmrd.Image | step-private types


@dataclass
class StepContext:
    """What every step of one stream sees: the raw ISMRMRD header and a logger.

    ``header_xml`` holds the bytes as received; :attr:`header` parses them on first use.
    """

    header_xml: bytes
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("cmrecon.chain"))
    _header: Any = None

    @property
    def header(self) -> ismrmrd.xsd.ismrmrdHeader:
        """The parsed ISMRMRD header (``ismrmrd.xsd.ismrmrdHeader``)."""
        if self._header is None:
            from cmrecon.errors import StepError
            try:
                self._header = ismrmrd.xsd.CreateFromDocument(self.header_xml)
            except Exception as exc:  # the xsd binding raises several unrelated types
                raise StepError(f"the ISMRMRD XML header cannot be parsed: {exc}") from exc
        return self._header


StepFn = Callable[[Iterator[Item], Any, StepContext], Iterator[Item]]


@dataclass(frozen=True)
class NoParams:
    """Parameters of a step that takes none."""


@dataclass(frozen=True)
class StepSpec:
    """A registered step: its name, parameter type, generator function and one-line summary."""

    name: str
    params_type: type
    fn: StepFn
    summary: str
    mrd_output: bool = True  # False: emits step-private objects (e.g. a buffered IR/PD slice)

    def make_params(self, raw: dict[str, Any] | None = None, where: str | None = None) -> Any:
        """Build this step's parameter dataclass from strings (XML) or values (YAML)."""
        return parse_params(self.params_type, raw or {}, where=where or f"step '{self.name}'")

    def describe_params(self) -> list[tuple[str, str, Any, str]]:
        """``(name, type, default, doc)`` for every parameter, for ``cmrecon chains show``."""
        return describe_params(self.params_type)


_REGISTRY: dict[str, StepSpec] = {}
_GADGET_PACKAGE = "cmrecon_gadgets"


def register(name: str, params: type = NoParams, *, mrd_output: bool = True) -> Callable[[StepFn], StepFn]:
    """Decorator: register ``fn(items, params, ctx)`` as chain step ``name``.

    ``mrd_output=False`` declares that the step passes step-private Python objects to the next
    step; in Gadgetron XML such a step shares one ``<external>`` process with its successors
    (see :mod:`cmrecon.chain.definition`).
    """
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"parameters of step '{name}' must be a dataclass, got {params!r}")

    def deco(fn: StepFn) -> StepFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ChainError(f"step '{name}' is registered twice "
                             f"({_REGISTRY[name].fn.__module__} and {fn.__module__})")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = StepSpec(name, params, fn, summary, mrd_output)
        return fn

    return deco


def load_steps() -> None:
    """Import the gadget package so that every step is registered (idempotent)."""
    importlib.import_module(_GADGET_PACKAGE)


def known_steps() -> list[str]:
    """Names of every registered step, sorted."""
    load_steps()
    return sorted(_REGISTRY)


def get_step(name: str) -> StepSpec:
    """Look a step up by name.

    Raises
    ------
    ChainError
        Unknown name; the message lists the known steps.
    """
    load_steps()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ChainError(f"unknown step '{name}'; known steps: {', '.join(sorted(_REGISTRY))}") from None
