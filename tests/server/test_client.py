"""The replay client (cmrecon.server.client): inputs checked before sending; a failing input ends the session."""

from __future__ import annotations

import shutil

import h5py
import pytest

from cmrecon.io.mrdfile import MrdFileError, iter_items, read_header_xml, write_dataset
from cmrecon.server import client
from cmrecon.server.client import ReplayError, replay_in_process, replay_remote


def test_a_corrupt_row_is_refused_before_anything_is_sent(server, case, tmp_path, monkeypatch):
    bad = tmp_path / "bad.h5"
    shutil.copy(case[0], bad)
    with h5py.File(bad, "r+") as f:
        row = f["dataset/data"][7]
        row["head"]["number_of_samples"] += 1
        f["dataset/data"][7] = row

    def no_connection(*args, **kwargs):
        raise AssertionError("a corrupt input must not reach the server")
    monkeypatch.setattr(client.socket, "create_connection", no_connection)
    with pytest.raises(MrdFileError, match=r"bad\.h5:/dataset/data row 7 is a corrupt acquisition"):
        replay_remote(bad, port=server.port, chain_name="fft_rss")
    with pytest.raises(ReplayError, match=r"bad\.h5:/dataset/data row 7 is a corrupt acquisition"):
        replay_in_process(bad, "fft_rss")


def test_an_input_without_acquisitions_is_an_error(server, case, tmp_path):
    empty = tmp_path / "empty.h5"
    write_dataset(empty, read_header_xml(case[0]), [])
    with pytest.raises(MrdFileError, match=r"empty\.h5:/dataset holds no acquisitions"):
        replay_remote(empty, port=server.port, chain_name="fft_rss")
    with pytest.raises(ReplayError, match="holds no acquisitions"):
        replay_in_process(empty, "fft_rss")


def test_an_input_failing_while_it_is_sent_ends_the_session_with_its_cause(server, case, monkeypatch):
    """Once a read failure in the sending thread left the server waiting for its idle timeout."""
    def failing(path, group):
        for i, item in enumerate(iter_items(path, group)):
            if i == 20:
                raise MrdFileError(f"{path}: row 20 cannot be read")
            yield item
    monkeypatch.setattr(client, "iter_items", failing)
    with pytest.raises(ReplayError, match=r"sending .*case\.h5 stopped: .*row 20 cannot be read"):
        replay_remote(case[0], port=server.port, chain_name="fft_rss", timeout_s=60)
