"""Fixtures of the model tests: a temporary folder whose weights a chain may name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cmrecon import runtime


@pytest.fixture()
def weights_folder(tmp_path, monkeypatch) -> Path:
    """``tmp_path`` is a configured weights folder for one test (as ``CMRECON_WEIGHTS_PATH``,
    which a ``cmrecon`` main called by the test rebuilds its settings from).
    """
    monkeypatch.setenv(runtime.WEIGHTS_PATH_ENV, str(tmp_path))
    monkeypatch.setattr(runtime, "_configured",
                        dataclasses.replace(runtime.current(), weights_path=(str(tmp_path),)))
    return tmp_path
