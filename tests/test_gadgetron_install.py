"""`cmrecon gadgetron install` on a stand-in Gadgetron home (the real one: bench/real_gadgetron.py)."""

from __future__ import annotations

import sys

import pytest

from cmrecon.chain.definition import list_chains, load_xml, resolve
from cmrecon.errors import CmreconError
from cmrecon.gadgetron_install import install
from cmrecon.io.header import schema_version


def _home(tmp_path, ismrmrd_minor):
    (tmp_path / "share" / "gadgetron" / "config").mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / f"libismrmrd.so.1.{ismrmrd_minor}").write_bytes(b"")
    return tmp_path


def test_install_writes_every_chain_as_gadgetron_loads_it_and_checks_the_python(tmp_path):
    home = _home(tmp_path, schema_version())
    report = install(home, python=sys.executable)
    assert sorted(report.written) == [f"{n}.xml" for n in list_chains()]
    for name in list_chains():
        xml = (home / "share" / "gadgetron" / "config" / f"{name}.xml").read_text()
        assert load_xml(xml, name).steps == resolve(name).steps    # the chain, exactly
        assert xml.count("<external>") == 1
    assert report.import_ok and report.server_schema == schema_version() and not report.warnings


def test_install_warns_about_a_server_on_another_ismrmrd_schema(tmp_path):
    home = _home(tmp_path, schema_version() - 1)
    report = install(home, python=sys.executable, dry_run=True)
    assert not list((home / "share" / "gadgetron" / "config").iterdir())   # dry run: nothing written
    assert any(f"<version>{schema_version()}</version>" in w for w in report.warnings)


def test_install_names_a_python_that_cannot_start_the_steps_and_a_non_gadgetron_folder(tmp_path):
    home = _home(tmp_path, schema_version())
    report = install(home, python="/bin/false", dry_run=True)   # exits 1 like a failed import
    assert not report.import_ok and any("cannot import the external steps" in w for w in report.warnings)
    with pytest.raises(CmreconError, match="not a Gadgetron installation"):
        install(tmp_path / "nowhere")
