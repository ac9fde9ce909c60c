"""Atomic outputs: a file we write appears whole under its name, or not at all.

Every file cmrecon writes (HDF5 images and raw data, ground-truth ``.npz``, PNG, DICOM) is
written to a temporary file beside it and renamed over the destination (``os.replace``, atomic
within one folder) once complete. A failure part way (disk full, no permission, a folder in the
way, Ctrl-C) removes the temporary file and leaves the destination as it was; an ``OSError``
reaches the caller as :class:`OutputError` naming the destination and the cause, which the CLI
prints as one line (exit status 2).
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cmrecon.errors import CmreconError

__all__ = ["OutputError", "atomic_path", "make_folder"]


class OutputError(CmreconError):
    """An output file could not be written; the message names the file and the cause."""


def _reason(exc: OSError) -> str:
    """The operating system's words for an OSError (``No space left on device``), else its text."""
    return exc.strerror or str(exc) or type(exc).__name__


def _create_temp(dest: Path) -> Path:
    """Create an empty, new temporary file beside ``dest`` (mode 0666 less the umask, as open())."""
    for _ in range(100):
        # hidden, so a leftover of a killed process is not taken for an output; the destination's
        # suffix last, for writers that choose a format by extension
        tmp = dest.with_name(f".{dest.stem}.{secrets.token_hex(4)}.tmp{dest.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {dest}")


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:   # already gone, or the folder went away: nothing of ours is left either way
        pass


def make_folder(folder: str | Path) -> Path:
    """Create ``folder`` and its parents if missing (an output's folder); return it.

    Raises
    ------
    OutputError
        The folder cannot be created (no permission, a file in the way...), naming it.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {folder}: {_reason(exc)}") from exc
    return folder


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; when the block ends normally, it becomes ``dest``.

    The caller writes the whole output to the yielded path (an empty file that exists). On a
    normal exit the file is flushed to disk (``fsync``, which also surfaces a late write error)
    and renamed to ``dest``, replacing any file there. On any exception the temporary file is
    removed and ``dest`` is untouched.

    Parameters
    ----------
    dest : the output file; its folder must exist.

    Raises
    ------
    OutputError
        Any ``OSError`` while creating, writing, syncing or renaming (``ENOSPC``, ``EFBIG``,
        ``EACCES``, ``dest`` is a folder...), with ``dest`` and the cause named.
    """
    dest = Path(dest)
    try:
        tmp = _create_temp(dest)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {_reason(exc)}") from exc
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(f"cannot write {dest}: {_reason(exc)}") from exc
    except BaseException:
        _remove(tmp)
        raise
