"""Our chains as Gadgetron external Python gadgets, driven by a harness playing Gadgetron's side
(tests/gadgetron_harness.py): every shipped chain XML as a real Gadgetron would run it, errors,
the stock client's time limit, and no process left behind when Gadgetron goes away.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from cmrecon.chain.definition import chains_dir, list_chains, resolve
from cmrecon.chain.runner import run_file
from cmrecon.gadgetron_external import EXIT_CONNECTION_LOST
from cmrecon.io import protocol as P
from cmrecon.io.mrdfile import iter_items, read_header_xml

from gadgetron_harness import CLIENT_DEFAULT_TIMEOUT_S, GadgetronRefused, play_gadgetron
from paths import DATA, TESTS

pytest.importorskip("gadgetron", reason="the optional `gadgetron` package is not installed")

LGE_STREAM = DATA / "sim_lge_r2_embedded.h5"


def _externals(chain: str) -> list[tuple[str, str]]:
    """``(target, <configuration> XML)`` of every <external> in ``chains/<chain>.xml``."""
    root = ET.parse(chains_dir() / f"{chain}.xml").getroot()
    out = []
    for ext in root.find("stream"):
        conf = ext.find("configuration")
        out.append((ext.find("execute").get("target"),
                    ET.tostring(conf, encoding="unicode") if conf is not None else "<configuration/>"))
    return out


def _wire(item):
    """An item as it arrives from a socket (serialised, then decoded)."""
    import io
    buf = io.BytesIO()
    P.MessageWriter(buf).write(item)
    buf.seek(0)
    return P.MessageReader(buf).read()


# the smallest recorded cine stream (6 phases, 4 coils): here the question is the same images as
# in-process within the client's patience; quality is tested in tests/chains/test_cine_chains.py
CINE_STREAM = DATA / "sim_cine_full.h5"


def _stream_for(chain: str, case) -> Path:
    if chain.startswith("cine_"):
        return CINE_STREAM
    return case[0] if chain in ("fft_rss", "passthrough") else LGE_STREAM


@pytest.mark.parametrize("chain", list_chains())
def test_every_shipped_chain_is_one_external_giving_the_in_process_images_within_the_client_timeout(chain, case):
    """The chain XML a console selects runs as ONE Python process and answers within 10 s."""
    externals = _externals(chain)
    assert len(externals) == 1, f"{chain}.xml starts {len(externals)} Python processes per session"
    target, config = externals[0]
    path = _stream_for(chain, case)
    # the INR is an optimisation per slice (its own budget_s): a small case is back well within a
    # minute, not within the stock client's 10 s (which bounds its connect only)
    deadline = 60.0 if chain == "cine_inr" else CLIENT_DEFAULT_TIMEOUT_S
    played = play_gadgetron(target, config, read_header_xml(path), list(iter_items(path)), deadline_s=deadline)
    assert played.returncode == 0, played.stderr[-2000:]
    assert isinstance(played.messages[-1], P.Close)
    got = [m for m in played.messages if not isinstance(m, P.Close)]
    expected = [_wire(it) for it in run_file(resolve(chain), path)]
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        assert type(a) is type(b) and bytes(a.getHead()) == bytes(b.getHead())
        if isinstance(b, ismrmrd.Image):
            assert a.attribute_string == b.attribute_string
        # the same code and BLAS policy; torch may use another thread count in the child
        scale = float(np.abs(b.data).max())
        np.testing.assert_allclose(a.data.astype(np.complex128), b.data.astype(np.complex128),
                                   rtol=0, atol=1e-5 * scale)


def test_failing_step_sends_error_before_close_and_exits_nonzero(case):
    path, _ = case
    acqs = list(iter_items(path))
    odd = ismrmrd.Acquisition.from_array(np.zeros((3, 64), np.complex64))
    played = play_gadgetron("noise_prewhiten", "<configuration/>", read_header_xml(path),
                            [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)] + [odd])
    errors = [m for m in played.messages if isinstance(m, P.Error)]
    assert errors and "3 channels, the noise scan had 4" in errors[0].text
    assert played.returncode != 0
    assert isinstance(played.messages[-1], P.Close) and played.messages.index(errors[0]) < len(played.messages) - 1


def test_bad_property_is_an_error_not_a_silent_default(case):
    path, _ = case
    played = play_gadgetron("fft_rss", '<configuration><property name="bogus" value="1"/></configuration>',
                            read_header_xml(path), [])
    errors = [m for m in played.messages if isinstance(m, P.Error)]
    assert played.returncode != 0 and errors and "unknown parameter(s) bogus" in errors[0].text


def test_grouped_external_reports_a_missing_pd_partner_as_error():
    h5 = DATA / "sim_lge_full.h5"
    ir_only = [a for a in iter_items(h5) if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) or a.idx.set == 0]
    played = play_gadgetron("steps", '<configuration><step name="buffer_ir_pd"/><step name="coil_maps"/>'
                            '<step name="unfold"/><step name="psir"/><step name="emit_images"/>'
                            '</configuration>', read_header_xml(h5), ir_only)
    errors = [m for m in played.messages if isinstance(m, P.Error)]
    assert played.returncode != 0 and errors and "no PD partner" in errors[0].text


def test_a_header_with_another_schema_version_is_refused_as_gadgetron_does():
    header = read_header_xml(LGE_STREAM).replace(b"<version>15</version>", b"<version>1</version>")
    assert b"<version>1</version>" in header
    with pytest.raises(GadgetronRefused, match="XML header version does not match"):
        play_gadgetron("steps", "<configuration/>", header, [])


@pytest.mark.parametrize("target", ["psir_clasic", "os", "system", "raw", "cine_steps", "re"])
def test_an_unknown_target_is_answered_with_an_error_naming_it(target):
    """Not a bare exit 1: Gadgetron's runner would turn a missing attribute into a TypeError."""
    played = play_gadgetron(target, "<configuration/>", read_header_xml(LGE_STREAM), [])
    errors = [m.text for m in played.messages if isinstance(m, P.Error)]
    assert played.returncode != 0 and errors, played.stderr[-2000:]
    assert f"unknown step '{target}'; known steps: " in errors[0] and "fft_rss" in errors[0]


def test_every_step_like_name_gadgetron_can_load_from_the_package_is_an_entry_point():
    """Gadgetron's runner loads a target with ``getattr``: a submodule (``raw``, ``learned``) or an
    imported module (``re``) was found there before ``__getattr__`` was asked, and a module is not
    callable, so Gadgetron got a bare exit instead of ERROR "unknown step".
    """
    from gadgetron.__main__ import load_target

    import cmrecon_gadgets
    from cmrecon.chain.registry import known_steps
    names = [n for n in vars(cmrecon_gadgets) if cmrecon_gadgets._TARGET.match(n)]
    assert {"raw", "learned", "basic", "cartesian", "lge_steps", "cine_steps"} <= set(names)
    assert not set(names) & set(known_steps())   # a module named like a step would hide the step
    for name in names:
        assert callable(load_target({"module": "cmrecon_gadgets", "target": name})), name


def test_only_step_like_names_are_entry_points():
    import cmrecon_gadgets
    assert callable(cmrecon_gadgets.fft_rss) and callable(cmrecon_gadgets.steps)
    for name in ("_private", "Foo", "__wrapped__"):
        with pytest.raises(AttributeError):
            getattr(cmrecon_gadgets, name)


# ------------------------------------------------------------------ no orphans


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, limit_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if not _alive(pid):
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def _psir_classic_config() -> str:
    return _externals("psir_classic")[0][1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_gadgetron_process_mid_stream_leaves_no_external_behind(tmp_path):
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, str(TESTS / "gadgetron_harness.py"), str(pid_file),
                               str(LGE_STREAM), "steps", _psir_classic_config(), "40"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    try:
        t0 = time.monotonic()
        while not pid_file.exists() or not pid_file.read_text().endswith("\n"):
            assert time.monotonic() - t0 < 60 and parent.poll() is None, "the harness did not start the external"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        time.sleep(1.0)  # the external is running, waiting for more data
        assert _alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        gone_after = _wait_gone(child, 5.0)
        # the watchdog polls every 0.2 s and the socket's end is seen at once
        assert gone_after is not None and gone_after < 1.5, f"external {child} still running"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_connection_closed_mid_stream_ends_the_external_at_once():
    from gadgetron_harness import _frames, spawn_external
    header = read_header_xml(LGE_STREAM)
    items = [it for _, it in zip(range(40), iter_items(LGE_STREAM))]
    child, listener, _ = spawn_external("steps")
    try:
        listener.settimeout(60)
        conn, _ = listener.accept()
        conn.sendall(_frames(_psir_classic_config(), header, items, close=False))
        time.sleep(1.0)
        assert child.poll() is None
        t0 = time.monotonic()
        conn.close()  # Gadgetron aborts the session; the server itself stays up
        rc = child.wait(timeout=10)
        assert time.monotonic() - t0 < 1.0
        assert rc == EXIT_CONNECTION_LOST
    finally:
        listener.close()
        if child.poll() is None:
            child.kill()
            child.wait()
