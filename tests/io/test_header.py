"""ISMRMRD header schema version: what we write, and the warning for a header a Gadgetron refuses."""

from __future__ import annotations

import subprocess
import sys

import ismrmrd
import pytest

from cmrecon.io.header import header_version, schema_version, version_warning
from cmrecon.io.mrdfile import read_header_xml, write_dataset
from cmrecon.server.client import replay_remote


def test_schema_version_is_the_installed_packages_minor_version():
    # ismrmrd 1.15.x: C++ ISMRMRD_XMLHDR_VERSION = ISMRMRD_VERSION_MINOR = 15
    assert schema_version() == int(ismrmrd.__version__.split(".")[1])


def test_simulate_command_writes_the_installed_schema_version(tmp_path):
    out = tmp_path / "case.h5"
    subprocess.run([sys.executable, "-m", "cmrecon.cli", "simulate", "lge", "-o", str(out), "--no-truth",
                    "--quiet", "--matrix", "32x24", "--coils", "4", "--acs-lines", "8"],
                   check=True, capture_output=True)
    xml = read_header_xml(out)
    assert header_version(xml) == schema_version()
    assert version_warning(xml) is None
    # and the version parses as the schema's integer field
    assert ismrmrd.xsd.CreateFromDocument(xml).version == schema_version()


@pytest.mark.parametrize("declared, warns", [(None, False), ("SAME", False), (1, True), (99, True)])
def test_version_warning_only_for_a_declared_other_version(declared, warns):
    v = schema_version() if declared == "SAME" else declared
    body = "<encoding/>" if v is None else f"<version>{v}</version><encoding/>"
    xml = f'<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">{body}</ismrmrdHeader>'
    w = version_warning(xml)
    assert (w is not None) == warns
    if warns:
        assert f"<version>{v}</version>" in w and f"schema version is {schema_version()}" in w


def test_server_warns_the_client_about_a_mismatching_header_and_still_reconstructs(server, case, tmp_path):
    from cmrecon.io.mrdfile import iter_items
    path, c = case
    xml = read_header_xml(path).decode()
    old = xml.replace("<ismrmrdHeader", "<ismrmrdHeader", 1)
    tag = 'xmlns="http://www.ismrm.org/ISMRMRD">'
    assert tag in old
    old = old.replace(tag, tag + "<version>1</version>", 1)
    stale = tmp_path / "stale.h5"
    write_dataset(stale, old, list(iter_items(path)))
    result = replay_remote(stale, port=server.port, chain_name="fft_rss")
    assert len(result.images) == c.truth_rss.shape[0]
    warnings = [t for t in result.texts if t.startswith("WARNING")]
    assert len(warnings) == 1 and "<version>1</version>" in warnings[0]
