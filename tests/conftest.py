"""Shared fixtures: a small dataset with known truth, and a live server on a free port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)

from mrd_cases import write_case  # noqa: E402


@pytest.fixture()
def weights_folder(tmp_path, monkeypatch) -> Path:
    """``tmp_path`` is a configured weights folder for one test (as ``CMRECON_WEIGHTS_PATH``,
    which a ``cmrecon`` main called by the test rebuilds its settings from).
    """
    import dataclasses

    from cmrecon import runtime
    monkeypatch.setenv(runtime.WEIGHTS_PATH_ENV, str(tmp_path))
    monkeypatch.setattr(runtime, "_configured",
                        dataclasses.replace(runtime.current(), weights_path=(str(tmp_path),)))
    return tmp_path


@pytest.fixture
def gram_calls(monkeypatch) -> list:
    """Counts ``E^H E`` evaluations of the cine reconstructions (one per iteration)."""
    from cmrecon.recon import cine
    calls = []
    gram = cine.CineGram.__call__

    def counted(self, x):
        calls.append(1)
        return gram(self, x)
    monkeypatch.setattr(cine.CineGram, "__call__", counted)
    return calls


@pytest.fixture()
def fresh_model_cache():
    """An empty process-wide model cache before and after the test."""
    from cmrecon.models import serving
    serving.clear_cache()
    yield
    serving.clear_cache()


@pytest.fixture()
def one_torch_thread():
    """Tiny models run fastest on one thread (and do not fight the other tests' threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def case(tmp_path_factory):
    """(path, Case) of a 2-slice, 4-coil, 2x-oversampled dataset with a 32-readout noise scan."""
    path = tmp_path_factory.mktemp("data") / "case.h5"
    return path, write_case(path, noise_sigma=1e-3)


@pytest.fixture()
def server():
    """A running MrdServer on 127.0.0.1 and a free port; shut down after the test."""
    from cmrecon.server.tcp import MrdServer
    srv = MrdServer("127.0.0.1", 0, idle_timeout_s=20.0, drain_timeout_s=1.0)
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.cuda`` tests skip where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
