"""Atomic outputs (cmrecon.io.atomic): a file appears whole under its name, or not at all."""

from __future__ import annotations

import errno
import os

import pytest

from cmrecon.io.atomic import OutputError, atomic_path, make_folder


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_finished_block_replaces_the_destination_and_leaves_no_temporary_file(tmp_path):
    dest = tmp_path / "out.h5"
    dest.write_bytes(b"old")
    with atomic_path(dest) as tmp:
        # beside the destination, hidden, with its suffix (PIL chooses a format by it)
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.") and tmp.suffix == ".h5"
        assert tmp.exists() and dest.read_bytes() == b"old"
        tmp.write_bytes(b"new")
        assert dest.read_bytes() == b"old"                  # nothing changes before the end
    assert dest.read_bytes() == b"new"
    assert _names(tmp_path) == ["out.h5"]


def test_a_new_file_gets_the_permissions_open_would_give_it(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.png") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o640


def test_any_exception_in_the_block_removes_the_temporary_file_and_keeps_the_old_one(tmp_path):
    dest = tmp_path / "out.h5"
    dest.write_bytes(b"old")
    for exc in (ValueError("bad"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with atomic_path(dest) as tmp:
                tmp.write_bytes(b"half")
                raise exc
        assert dest.read_bytes() == b"old" and _names(tmp_path) == ["out.h5"]


def test_a_full_disk_is_an_output_error_naming_the_file_and_leaves_nothing(tmp_path):
    dest = tmp_path / "truth.npz"
    with pytest.raises(OutputError, match=r"cannot write .*truth\.npz: No space left on device"):
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"part")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert _names(tmp_path) == []


def test_a_write_error_reported_only_at_sync_is_caught_too(tmp_path, monkeypatch):
    def fsync(fd):   # NFS and some full disks report a lost write here, not at write()
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OutputError, match="Input/output error"):
        with atomic_path(tmp_path / "out.h5") as tmp:
            tmp.write_bytes(b"data")
    assert _names(tmp_path) == []


def test_a_folder_in_the_way_or_a_missing_folder_is_an_output_error(tmp_path):
    (tmp_path / "out.h5").mkdir()
    with pytest.raises(OutputError, match=r"out\.h5"):
        with atomic_path(tmp_path / "out.h5") as tmp:
            tmp.write_bytes(b"data")
    assert _names(tmp_path) == ["out.h5"] and (tmp_path / "out.h5").is_dir()
    with pytest.raises(OutputError, match="No such file or directory"):
        with atomic_path(tmp_path / "missing" / "out.h5"):
            pass


def test_make_folder_creates_parents_and_names_the_folder_it_cannot_create(tmp_path):
    assert make_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"cannot create folder .*file/sub"):
        make_folder(tmp_path / "file" / "sub")
