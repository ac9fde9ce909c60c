"""Memory budget of one session's buffers: what a stream may make the server hold at once.

Each header field is bounded on its own (:class:`cmrecon.chain.limits.SessionLimits`), but their
product is not: a header declaring a 1024² matrix and 128 coils passes every bound, and one
readout per cardiac phase or IR/PD repeat then makes a buffer allocate 1 GiB each. The buffers
take bytes from a :class:`MemoryBudget` before they allocate and give them back when a slice is
released, so a stream that would need more is refused, naming the limit, before the allocation.
"""

from __future__ import annotations

from cmrecon.errors import InputError

__all__ = ["MemoryBudget"]


class MemoryBudget:
    """Bytes the buffers of one session may hold at once.

    Parameters
    ----------
    max_bytes : the limit; None = unlimited (library use).
    option : the setting that raises it, named in the error.
    """

    def __init__(self, max_bytes: int | None, option: str = "cmrecon serve --max-buffer-mb") -> None:
        self.max_bytes = max_bytes
        self.option = option
        self.held = 0

    def take(self, nbytes: int, what: str) -> None:
        """Account for ``nbytes`` about to be allocated for ``what``.

        Raises
        ------
        InputError
            The session would hold more than ``max_bytes``.
        """
        if self.max_bytes is not None and self.held + nbytes > self.max_bytes:
            mib = 1 << 20
            raise InputError(f"{what} needs {nbytes / mib:.2f} MiB more while this session's buffers hold "
                             f"{self.held / mib:.2f} MiB: over the limit of {self.max_bytes / mib:g} MiB "
                             f"({self.option})")
        self.held += nbytes

    def give(self, nbytes: int) -> None:
        """Account for ``nbytes`` released."""
        self.held = max(0, self.held - nbytes)
