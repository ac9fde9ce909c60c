"""Exception types of cmrecon; every message names the field and the value at fault."""


class CmreconError(Exception):
    """Base class of every error cmrecon raises on purpose."""


class ProtocolError(CmreconError):
    """A malformed, truncated, oversized or unexpected MRD stream message."""


class InputError(CmreconError):
    """Data that no step should see: non-finite samples, claims over the session limits. Named by
    the readout or header field, not by a step.
    """


class Cancelled(CmreconError):
    """The session's client went away: the chain stopped at the next item boundary, or inside a
    long iterative step at its next iteration (StepContext.cancelled).
    """


class ChainError(CmreconError):
    """A chain definition that cannot be loaded: unknown chain, unknown step, bad parameter."""


class StepError(CmreconError):
    """A step could not process its input (bad header, inconsistent data, missing partner)."""
