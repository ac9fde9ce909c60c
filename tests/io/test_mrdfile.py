"""ISMRMRD HDF5 files (cmrecon.io.mrdfile): damaged inputs named, outputs whole or absent."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import ismrmrd
import numpy as np
import pytest

from cmrecon.io.atomic import OutputError
from cmrecon.io.mrdfile import (
    ImageFileWriter,
    MrdFileError,
    check_dataset,
    iter_items,
    read_header_xml,
    read_images,
    write_dataset,
)


@pytest.fixture()
def raw(case, tmp_path):
    """A writable copy of the session's small raw dataset."""
    path = tmp_path / "raw.h5"
    shutil.copy(case[0], path)
    return path


def _set_head(path, row, **fields):
    with h5py.File(path, "r+") as f:
        ds = f["dataset/data"]
        r = ds[row]
        for name, value in fields.items():
            r["head"][name] = value
        ds[row] = r


def _image(series=1):
    img = ismrmrd.Image.from_array(np.arange(64, dtype=np.float32).reshape(8, 8))
    img.image_series_index = series
    return img


def test_check_dataset_counts_what_iter_items_yields(case):
    path, c = case
    assert check_dataset(path) == (len(c.items), 0)
    assert len(list(iter_items(path))) == len(c.items)


def test_one_file_read_from_eight_threads_at_once_gives_every_thread_every_item(case):
    """h5py 3.16 / HDF5 2.0: closing one handle of a file while another thread read the same file
    through its own handle crashed the process (a segfault, so the readers run in a child).
    """
    code = textwrap.dedent(f"""
        import threading
        from cmrecon.io.mrdfile import check_dataset, iter_items
        counts = []
        def read():
            for _ in range(10):
                counts.append((check_dataset({str(case[0])!r}), sum(1 for _ in iter_items({str(case[0])!r}))))
        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(len(counts), set(counts))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.split(maxsplit=1) == ["80", f"{{(({len(case[1].items)}, 0), {len(case[1].items)})}}\n"]


def test_a_row_whose_header_disagrees_with_its_data_is_named_before_it_is_decoded(raw):
    channels = int(next(iter_items(raw)).active_channels)
    _set_head(raw, 5, active_channels=channels + 3)
    for read in (check_dataset, lambda p: list(iter_items(p))):
        with pytest.raises(MrdFileError, match=rf"raw\.h5:/dataset/data row 5 is a corrupt acquisition: "
                                               rf"its header says {channels + 3} channels"):
            read(raw)


def test_a_header_claiming_a_huge_readout_is_refused_without_allocating_it(raw):
    _set_head(raw, 0, active_channels=65535, number_of_samples=65535)   # 32 GB if built
    with pytest.raises(MrdFileError, match="row 0 is a corrupt acquisition: its header says 65535"):
        next(iter_items(raw))


def test_a_truncated_file_a_foreign_table_and_a_broken_header_are_named(raw, tmp_path):
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    with pytest.raises(MrdFileError, match=r"cannot open ISMRMRD file .*cut\.h5: .*truncated file"):
        check_dataset(cut)
    with h5py.File(raw, "r+") as f:
        del f["dataset/data"]
        f["dataset/data"] = np.zeros(3)
    with pytest.raises(MrdFileError, match=r"raw\.h5:/dataset/data is not an ISMRMRD acquisition table"):
        check_dataset(raw)
    write_dataset(raw, b"<ismrmrdHeader><encoding>", [])
    with pytest.raises(MrdFileError, match=r"raw\.h5:/dataset/xml is not well-formed XML"):
        check_dataset(raw)


def test_write_dataset_keeps_the_old_file_when_the_disk_is_full(raw, monkeypatch):
    before = raw.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"cannot write .*raw\.h5: No space left on device"):
        write_dataset(raw, read_header_xml(raw), list(iter_items(raw))[:3])
    assert raw.read_bytes() == before
    assert sorted(p.name for p in raw.parent.iterdir()) == ["raw.h5"]


def test_image_file_writer_adds_a_group_to_an_existing_file_in_one_write(tmp_path):
    path = tmp_path / "images.h5"
    with ImageFileWriter(path, "first") as w:
        w.append(_image(1))
        assert not path.exists()                       # written whole, at the end
    with ImageFileWriter(path, "second") as w:
        w.append(_image(2))
        w.append(_image(2))
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["first", "second"]
    assert [len(v) for v in read_images(path, "second").values()] == [2]
    np.testing.assert_array_equal(read_images(path, "first")["image_1"][0].data[0, 0], _image().data[0, 0])


def test_image_file_writer_writes_nothing_when_its_block_fails(tmp_path):
    path = tmp_path / "images.h5"
    with ImageFileWriter(path, "kept") as w:
        w.append(_image())
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with ImageFileWriter(path, "lost") as w:
            w.append(_image())
            raise RuntimeError("the replay failed")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.h5"]


def test_image_file_writer_refuses_an_existing_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not HDF5")
    with pytest.raises(MrdFileError, match=r"notes\.h5 exists and is not an HDF5 file"):
        ImageFileWriter(path)
    assert path.read_text() == "not HDF5"
