"""cmrecon_gadgets: thin MRD <-> array adapters, one per registered chain step.

Importing this package registers every step in :mod:`cmrecon.chain.registry`; the
Gadgetron entry points (``python -m gadgetron <port> cmrecon_gadgets <step>``) resolve
through :func:`__getattr__`.
"""

import re as _re
import types as _types

# Module names must differ from step names: the step entry points resolve through __getattr__.
from cmrecon_gadgets import basic, cartesian, cine_steps, learned, lge_steps, raw

#: What a chain's ``target`` may look like (a step name); other attribute names are not targets.
_TARGET = _re.compile(r"[a-z][a-z0-9_]*\Z")


class _Submodule(_types.ModuleType):
    """A submodule of this package, callable as the entry point of its own (unknown) step name.

    Gadgetron's runner loads a target with ``getattr(cmrecon_gadgets, target)``, which finds a
    submodule (``raw``, ``learned``...) before :func:`__getattr__` is asked; a plain module is
    not callable, so ``target="raw"`` ended the external with a bare exit 1. Called, a submodule
    answers Gadgetron as every unknown target does: ERROR "unknown step 'raw'; known steps: ...".
    ``from cmrecon_gadgets import raw`` still gives the module.
    """

    def __call__(self, connection) -> None:
        from cmrecon.gadgetron_external import entry_point
        entry_point(self.__name__.rpartition(".")[2])(connection)


for _module in (basic, cartesian, cine_steps, learned, lge_steps, raw):
    _module.__class__ = _Submodule


def __getattr__(name: str):
    """``cmrecon_gadgets.<step>``: the Gadgetron external entry point of a step.

    Any step-like name gets one, registered or not: Gadgetron's runner turns a missing attribute
    into a bare exit 1, while the entry point of an unknown name (a typo, ``os``) answers Gadgetron
    with ERROR "unknown step '<name>'; known steps: ..." when the session starts. The package's
    own submodules are attributes, not asked for here; they answer the same way (:class:`_Submodule`).
    """
    if not _TARGET.match(name):
        raise AttributeError(f"module 'cmrecon_gadgets' has no attribute '{name}'")
    from cmrecon.gadgetron_external import entry_point
    return entry_point(name)
