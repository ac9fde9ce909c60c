"""SimTruth files (cmrecon.sim.truth): the name given, whole or absent."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from cmrecon.io.atomic import OutputError
from cmrecon.sim.truth import SimTruth


def _truth():
    return SimTruth(**{f.name: np.full((2, 3), i, np.float32) for i, f in enumerate(fields(SimTruth))})


def test_save_writes_exactly_the_name_given_even_without_npz(tmp_path):
    """``np.savez`` alone would have written ``truth.npz`` for ``truth``."""
    assert _truth().save(tmp_path / "truth") == tmp_path / "truth"
    assert [p.name for p in tmp_path.iterdir()] == ["truth"]
    np.testing.assert_array_equal(SimTruth.load(tmp_path / "truth").psi, _truth().psi)


def test_save_onto_a_folder_is_an_output_error_and_leaves_nothing(tmp_path):
    (tmp_path / "t.npz").mkdir()
    with pytest.raises(OutputError, match=r"cannot write .*t\.npz"):
        _truth().save(tmp_path / "t.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"] and (tmp_path / "t.npz").is_dir()
