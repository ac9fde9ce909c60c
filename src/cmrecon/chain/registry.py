"""The one registry of chain steps: name, typed parameters and type flow of each.

A step is a generator stage ``fn(items, params, ctx) -> items`` over MRD items (acquisitions,
waveforms, images) and typed products (:mod:`cmrecon.products`), registered once under one
name. That name is the XML ``<execute target=…>``, the YAML ``step:`` key, what our server runs
and what ``cmrecon replay --in-process`` runs. Each step declares what it consumes and produces,
so a chain is checked when it is loaded, not on its first slice.

Parameters are frozen dataclasses parsed once by :mod:`cmrecon.params`.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import ismrmrd

from cmrecon.errors import ChainError, CmreconError
from cmrecon.params import describe_params, params_to_strings, parse_params  # noqa: F401
from cmrecon.recon.budget import MemoryBudget

Item = Any  # ismrmrd.Acquisition | ismrmrd.Waveform | ismrmrd.Image | a product


@dataclass
class StepContext:
    """What every step of one stream sees: the raw ISMRMRD header, a logger, the memory budget,
    the session's cancel flag.

    ``header_xml`` holds the bytes as received; :attr:`header` parses them on first use.
    ``budget`` is the session's :class:`~cmrecon.recon.budget.MemoryBudget`, shared by the
    buffering steps (unlimited unless the runner was given limits). ``cancel`` is set when the
    session's client is gone (:func:`cmrecon.chain.runner.run_chain`); the runner stops the chain
    at its next item, and a step whose numerics iterate within one item passes
    :meth:`cancelled` to them as their ``should_stop`` (they raise
    :class:`~cmrecon.errors.Cancelled` at their next iteration).
    """

    header_xml: bytes
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("cmrecon.chain"))
    budget: MemoryBudget = field(default_factory=lambda: MemoryBudget(None))
    cancel: threading.Event | None = None
    _header: Any = None

    def cancelled(self) -> bool:
        """Whether the session's client is gone (False when the stream has no cancel flag)."""
        return self.cancel is not None and self.cancel.is_set()

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


#: The MRD items a chain reads and writes; everything else is a step-to-step product.
MRD_TYPES: tuple[type, ...] = (ismrmrd.Acquisition, ismrmrd.Image, ismrmrd.Waveform)


class Same:
    """``produces=Same``: the step hands on the type it was given (e.g. ``passthrough``)."""


def type_names(types: tuple[type, ...]) -> str:
    """``"A or B"`` for error messages."""
    return " or ".join(t.__name__ for t in types)


@dataclass(frozen=True)
class StepSpec:
    """A registered step: name, parameter type, generator, summary, and its type flow.

    ``consumes``: the product types the step works on (``()`` = any: it handles every item);
    items of other types pass through it unchanged. ``produces``: what it hands on in their
    place (:class:`Same` = the type it was given). ``blocks``: the step also takes imaging
    readouts as :class:`~cmrecon.io.acquisitions.AcquisitionBlock` (and hands on blocks where
    it hands on readouts); the runner packs them for it.
    """

    name: str
    params_type: type
    fn: StepFn
    summary: str
    consumes: tuple[type, ...] = ()
    produces: type = Same
    check: Callable[[Any], None] | None = None
    blocks: bool = False

    @property
    def produces_mrd(self) -> bool:
        """Whether what the step hands on can cross a Gadgetron ``<external>`` boundary."""
        return self.produces is Same or issubclass(self.produces, MRD_TYPES)

    def output_type(self, given: type) -> type:
        """The type this step hands on when the stream carries ``given``.

        Raises
        ------
        ChainError
            The step does not consume ``given``; the message says which step would make what it needs.
        """
        if self.consumes and not issubclass(given, self.consumes):
            makers = sorted(s.name for s in _REGISTRY.values()
                            if s.produces is not Same and issubclass(s.produces, self.consumes))
            hint = f"; put {' or '.join(makers)} before it" if makers else ""
            raise ChainError(f"step '{self.name}' consumes {type_names(self.consumes)}, but the "
                             f"stream carries {given.__name__} there{hint}")
        return given if self.produces is Same else self.produces

    @property
    def flow(self) -> str:
        """``"A or B -> C"``: what the step consumes and hands on, for ``cmrecon chains steps``."""
        given = type_names(self.consumes) if self.consumes else "any item"
        return f"{given} -> {'the same' if self.produces is Same else self.produces.__name__}"

    def make_params(self, raw: dict[str, Any] | None = None, where: str | None = None) -> Any:
        """Build this step's parameter dataclass from strings (XML) or values (YAML), and check it.

        Raises
        ------
        ChainError
            A parameter of the wrong type or out of its choices, or one the step's ``check``
            refuses (e.g. weights no chain may name), named with ``where``.
        """
        where = where or f"step '{self.name}'"
        params = parse_params(self.params_type, raw or {}, where=where)
        if self.check is not None:
            try:
                self.check(params)
            except (CmreconError, ValueError) as exc:
                raise ChainError(f"{where}: {exc}") from exc
        return params

    def describe_params(self) -> list[tuple[str, str, Any, str]]:
        """``(name, type, default, doc)`` for every parameter, for ``cmrecon chains show``."""
        return describe_params(self.params_type)


_REGISTRY: dict[str, StepSpec] = {}
_GADGET_PACKAGE = "cmrecon_gadgets"


def _each(fn: Callable[[Any, Any, StepContext], Any], consumes: tuple[type, ...]) -> StepFn:
    """A stream stage applying ``fn(product, params, ctx)`` to every item of ``consumes``; others pass."""
    def stage(items: Iterator[Item], params: Any, ctx: StepContext) -> Iterator[Item]:
        for item in items:
            yield fn(item, params, ctx) if isinstance(item, consumes) else item
    stage.__name__, stage.__doc__, stage.__wrapped__ = fn.__name__, fn.__doc__, fn
    return stage


def register(name: str, params: type = NoParams, *, consumes: type | tuple[type, ...] = (),
             produces: type = Same, each: bool = False,
             check: Callable[[Any], None] | None = None,
             blocks: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: register chain step ``name`` with its parameters and type flow.

    Parameters
    ----------
    name : the step's one name (XML ``target``, YAML ``step:``).
    params : frozen dataclass of its parameters.
    consumes : product type(s) it works on; ``()`` = every item (the step passes on what it
        does not handle itself).
    produces : the type it hands on in their place (:class:`Same`: unchanged type).
    each : the decorated function maps ONE product, ``fn(product, params, ctx) -> product``;
        the registry turns it into the stream stage that passes other items through. Without
        ``each`` the function is the stream stage ``fn(items, params, ctx) -> items``.
    check : ``check(params)`` raising a :class:`CmreconError` or ``ValueError`` for parameters
        that parse but cannot work (weights no chain may name): run when the chain is loaded,
        so the client hears it before any data is sent. Cheap checks only (no model loading).
    blocks : the step takes runs of imaging readouts as
        :class:`~cmrecon.io.acquisitions.AcquisitionBlock` as well as single acquisitions
        (:func:`cmrecon.chain.runner.compose` packs them for it and unpacks them for the
        steps after it that do not).

    A chain is checked against ``consumes``/``produces`` when it is built
    (:func:`cmrecon.chain.definition.build_chain`). A step whose product is not an MRD item
    shares one Gadgetron ``<external>`` process with its successor.
    """
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"parameters of step '{name}' must be a dataclass, got {params!r}")
    consumed = consumes if isinstance(consumes, tuple) else (consumes,)
    if each and not consumed:
        raise TypeError(f"step '{name}': each=True needs the consumed type")

    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY and getattr(_REGISTRY[name].fn, "__wrapped__", _REGISTRY[name].fn) is not fn:
            raise ChainError(f"step '{name}' is registered twice "
                             f"({_REGISTRY[name].fn.__module__} and {fn.__module__})")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        stage = _each(fn, consumed) if each else fn
        _REGISTRY[name] = StepSpec(name, params, stage, summary, consumed, produces, check, blocks)
        return fn

    return deco


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered step (without loading the gadget package)."""
    return name in _REGISTRY


def load_steps() -> None:
    """Register every step: import the gadget package (idempotent; the one place it is imported)."""
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
