"""cmrecon_gadgets: thin MRD <-> array adapters, one per registered chain step.

Importing this package registers every step in :mod:`cmrecon.chain.registry`; the
Gadgetron entry points (``python -m gadgetron <port> cmrecon_gadgets <step>``) resolve
through :func:`__getattr__`.
"""

# Module names must differ from step names: the step entry points resolve through __getattr__.
from cmrecon_gadgets import basic, cartesian, cine_steps, learned, lge_steps, raw  # noqa: F401  (registration side effects)


def __getattr__(name: str):
    """``cmrecon_gadgets.<step>``: the Gadgetron external entry point of a registered step."""
    from cmrecon.chain import registry
    from cmrecon.chain.definition import GROUP_TARGET
    if name.startswith("__") or not (registry.is_registered(name) or name == GROUP_TARGET):
        raise AttributeError(f"module 'cmrecon_gadgets' has no step '{name}'")
    from cmrecon.gadgetron_external import entry_point
    return entry_point(name)
