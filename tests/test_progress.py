"""Progress: on a terminal, log lines never land inside the bar."""

from __future__ import annotations

import io
import logging

from cmrecon.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_line_on_the_bars_terminal_clears_the_bar_first_and_the_bar_comes_back():
    term = _Terminal()
    handler = logging.StreamHandler(term)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        bar = Progress("job", 10, stream=term)
        bar.update(4)
        logging.getLogger("cmrecon.test").warning("something happened")
        bar.update(1)
        bar.close()
        logging.getLogger("cmrecon.test").warning("after")
    finally:
        root.removeHandler(handler)
    out = term.getvalue()
    drawn = out.index("4/10")
    cleared = out.index("\r\033[K", drawn)
    assert out[cleared:].startswith("\r\033[KWARNING something happened\n")   # from column 0
    assert "5/10" in out[cleared:] and out.rstrip().endswith("WARNING after")
    assert out.count("\033[K") == 1          # after close the handler no longer clears anything


def test_off_a_terminal_nothing_is_cleared_and_lines_are_plain():
    stream = io.StringIO()
    bar = Progress("job", 3, stream=stream, every_s=0.0)
    bar.update(3)
    bar.close()
    assert "\r" not in stream.getvalue() and "\033" not in stream.getvalue()
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("job [") and "3/3" in last and last.endswith(" done")
