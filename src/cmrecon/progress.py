"""Progress for long jobs: a one-line bar on a terminal, periodic lines otherwise (logs, CI)."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO


class _ClearBar(logging.Filter):
    """Clears a terminal progress bar before a log line is written to the same terminal."""

    def __init__(self, bar: Progress) -> None:
        super().__init__()
        self.bar = bar

    def filter(self, record: logging.LogRecord) -> bool:
        self.bar.clear_line()
        return True


class Progress:
    """Report ``done/total`` for a named job.

    On a TTY the line redraws in place; elsewhere a line is printed every ``every_s`` seconds
    and at the end, so CI logs stay short.
    """

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 every_s: float = 2.0, enabled: bool = True) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.enabled = enabled
        self.done = 0
        self._t0 = time.monotonic()
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = False
        # log lines to the bar's terminal first clear the bar (it is redrawn at the next update),
        # so "INFO ..." never lands in the middle of "[#####     ] 40/100"
        self._filter = _ClearBar(self) if self._tty and enabled else None
        self._handlers = [h for h in logging.getLogger().handlers
                          if getattr(h, "stream", None) is self.stream] if self._filter else []
        for h in self._handlers:
            h.addFilter(self._filter)

    def clear_line(self) -> None:
        """Erase the bar from the terminal line (a log line follows); the next update redraws it."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn, self._last = False, 0.0

    def _line(self) -> str:
        rate = self.done / max(time.monotonic() - self._t0, 1e-9)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            return f"{self.label} [{bar:<30}] {self.done}/{self.total} ({rate:.0f}/s)"
        return f"{self.label} {self.done} ({rate:.0f}/s)"

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if self._tty and now - self._last > 0.1:
            self.stream.write("\r" + self._line())
            self.stream.flush()
            self._last, self._drawn = now, True
        elif not self._tty and now - self._last > self.every_s:
            self.stream.write(self._line() + "\n")
            self._last = now

    def close(self) -> None:
        """Write the final line and stop clearing the bar for log lines."""
        for h in self._handlers:
            h.removeFilter(self._filter)
        self._handlers = []
        if self.enabled:
            self.stream.write(("\r" if self._tty else "") + self._line() + " done\n")
            self.stream.flush()
            self._drawn = False
