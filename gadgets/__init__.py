"""cmrecon_gadgets: thin MRD <-> array adapters, one per registered chain step.

Importing this package registers every step in :mod:`cmrecon.chain.registry`; the
Gadgetron entry points (``python -m gadgetron <port> cmrecon_gadgets <step>``) resolve
through :func:`__getattr__`.
"""

import re

# Module names must differ from step names: the step entry points resolve through __getattr__.
from cmrecon_gadgets import basic, cartesian, cine_steps, learned, lge_steps, raw  # noqa: F401  (registration side effects)

#: What a chain's ``target`` may look like (a step name); other attribute names are not targets.
_TARGET = re.compile(r"[a-z][a-z0-9_]*\Z")


def __getattr__(name: str):
    """``cmrecon_gadgets.<step>``: the Gadgetron external entry point of a step.

    Any step-like name gets one, registered or not: Gadgetron's runner turns a missing attribute
    into a bare exit 1, while the entry point of an unknown name (a typo, ``os``) answers Gadgetron
    with ERROR "unknown step '<name>'; known steps: ..." when the session starts.
    """
    if not _TARGET.match(name):
        raise AttributeError(f"module 'cmrecon_gadgets' has no attribute '{name}'")
    from cmrecon.gadgetron_external import entry_point
    return entry_point(name)
