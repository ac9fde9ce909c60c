"""Everyday CLI mistakes: one line, a nonzero exit, no traceback, nothing run in vain."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from paths import DATA


def _cmrecon(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cmrecon.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def _one_line_error(run, needle):
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and needle in errors[0], run.stderr


def test_port_in_use_and_invalid_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        _one_line_error(_cmrecon("serve", "-p", str(s.getsockname()[1])), "cannot listen on")
    _one_line_error(_cmrecon("serve", "-p", "70000"), "is not a TCP port")


def test_output_folder_missing_is_refused_before_the_reconstruction(tmp_path):
    run = _cmrecon("replay", "-i", str(DATA / "sim_lge_full.h5"), "--in-process", "-c", "psir_classic",
                   "-o", str(tmp_path / "missing" / "out.h5"))
    _one_line_error(run, "does not exist")
    assert "replay sim_lge_full.h5" not in run.stderr          # no progress: nothing ran


def test_missing_input_and_unknown_log_level(tmp_path):
    _one_line_error(_cmrecon("replay", "-i", str(tmp_path / "none.h5"), "--in-process"), "no such file")
    _one_line_error(_cmrecon("--log-level", "LOUD", "chains", "list"), "--log-level")


def test_a_closed_pipe_is_not_an_error():
    """`cmrecon chains steps | head -1`: the reader may leave before we write."""
    import os
    r, w = os.pipe()
    os.close(r)                                   # the reader is gone before anything is written
    run = subprocess.run([sys.executable, "-m", "cmrecon.cli", "chains", "steps"], stdout=w,
                         stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(w)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr


def test_sigterm_stops_the_server_cleanly():
    import signal
    proc = subprocess.Popen([sys.executable, "-m", "cmrecon.cli", "serve", "-p", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(10):   # log lines first, then the listening line
            line = proc.stderr.readline()
            if "listening on" in line:
                break
        assert "listening on 127.0.0.1:" in line
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        rest = proc.stderr.read()
        assert rc == 0 and "stopped" in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_query_answers_health_and_fails_clearly_without_a_server(server):
    ok = _cmrecon("query", "gadgetron::health", "-p", str(server.port))
    assert ok.returncode == 0 and ok.stdout.strip() == "ok"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    _one_line_error(_cmrecon("query", "-p", str(free), "--timeout", "2"), "failed")


# --- outputs are whole or absent; failures are one line (issue 14) ---------------------------

def _cmrecon_file_limit(limit_bytes, *args):
    """Run cmrecon with RLIMIT_FSIZE: a write past ``limit_bytes`` fails with EFBIG, as a full disk would."""
    resource = pytest.importorskip("resource")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG from write() instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, "-m", "cmrecon.cli", "--log-level", "ERROR", *args],
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)


def _error_line_only(run, needle):
    """Exit 2, no traceback, exactly one error line on stderr (progress lines aside), naming ``needle``."""
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and needle in errors[0], run.stderr
    return errors[0]


def test_a_full_disk_during_replay_is_one_line_and_leaves_no_file(tmp_path):
    out = tmp_path / "out.h5"
    line = _error_line_only(
        _cmrecon_file_limit(20_000, "replay", "-i", str(DATA / "sim_lge_full.h5"), "--in-process",
                            "-c", "psir_classic", "-o", str(out)),
        f"cannot write {out}")
    assert line.startswith("cmrecon replay: error: ") and "File too large" in line
    assert list(tmp_path.iterdir()) == []                   # neither the file nor a temporary one


def test_a_full_disk_keeps_an_existing_output_as_it_was(tmp_path):
    out = tmp_path / "out.h5"
    args = ("replay", "-i", str(DATA / "sim_lge_full.h5"), "--in-process", "-c", "fft_rss", "-o", str(out))
    assert _cmrecon(*args).returncode == 0
    before = out.read_bytes()
    _error_line_only(_cmrecon_file_limit(len(before) + 1000, *args), f"cannot write {out}")
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_a_full_disk_during_simulate_is_one_line_and_leaves_no_file(tmp_path):
    out = tmp_path / "case.h5"
    line = _error_line_only(
        _cmrecon_file_limit(100_000, "simulate", "lge", "-o", str(out), "--quiet", "--slices", "1",
                            "--repeats", "2", "--coils", "4", "--matrix", "48x32", "--acs-lines", "8"),
        f"cannot write {out}")
    assert line.startswith("cmrecon simulate: error: ")
    assert list(tmp_path.iterdir()) == []


def test_a_replay_that_returns_nothing_is_an_error_and_writes_nothing(tmp_path):
    import ismrmrd

    from cmrecon.io.mrdfile import iter_items, read_header_xml, write_dataset
    noise = tmp_path / "noise_only.h5"
    src = DATA / "sim_lge_full.h5"
    write_dataset(noise, read_header_xml(src),
                  [a for a in iter_items(src) if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)])
    _error_line_only(_cmrecon("replay", "-i", str(noise), "--in-process", "-c", "fft_rss",
                              "-o", str(tmp_path / "out.h5"), "--png", str(tmp_path / "png")),
                     "no images came back from chain 'fft_rss'")
    assert [p.name for p in tmp_path.iterdir()] == ["noise_only.h5"]


def test_passthrough_returns_readouts_which_are_fine_unless_images_were_asked_for(tmp_path):
    args = ("replay", "-i", str(DATA / "sim_lge_full.h5"), "--in-process", "-c", "passthrough")
    run = _cmrecon(*args)
    assert run.returncode == 0 and "received 0 images and 112 acquisitions/waveforms" in run.stderr
    _error_line_only(_cmrecon(*args, "-o", str(tmp_path / "out.h5")), "only 112 acquisitions/waveforms")
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_or_empty_input_is_one_line_naming_the_file_before_anything_is_sent(server, tmp_path):
    import shutil

    import h5py

    from cmrecon.io.mrdfile import read_header_xml, write_dataset
    bad = tmp_path / "bad.h5"
    shutil.copy(DATA / "sim_lge_full.h5", bad)
    with h5py.File(bad, "r+") as f:
        row = f["dataset/data"][40]
        row["head"]["active_channels"] += 3
        f["dataset/data"][40] = row
    empty = tmp_path / "empty.h5"
    write_dataset(empty, read_header_xml(bad), [])
    for path, needle in ((bad, f"{bad}:/dataset/data row 40 is a corrupt acquisition"),
                         (empty, f"{empty}:/dataset holds no acquisitions")):
        for where in (("-p", str(server.port)), ("--in-process",)):   # once hung 300 s (remote)
            run = _cmrecon("replay", "-i", str(path), *where, "-c", "fft_rss", "-o", str(tmp_path / "out.h5"))
            _error_line_only(run, needle)
            assert f"replay {path.name}" not in run.stderr               # no progress: nothing sent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5", "empty.h5"]


def test_an_existing_output_that_is_not_hdf5_is_refused_before_the_reconstruction(tmp_path):
    out = tmp_path / "notes.h5"
    out.write_text("keep me")
    run = _cmrecon("replay", "-i", str(DATA / "sim_lge_full.h5"), "--in-process", "-o", str(out))
    _error_line_only(run, "exists and is not an HDF5 file")
    assert "replay sim_lge_full.h5" not in run.stderr and out.read_text() == "keep me"


def test_a_failed_png_takes_the_pngs_already_written_with_it(tmp_path, monkeypatch):
    import errno
    import os

    from PIL import Image

    from cmrecon.cli import write_outputs
    from cmrecon.io.atomic import OutputError
    from cmrecon.server.client import replay_in_process
    images = replay_in_process(DATA / "sim_lge_full.h5", "psir_classic").images
    assert len(images) == 2
    real_save, calls = Image.Image.save, []

    def save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(self, fp, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(OutputError, match=r"\.png: No space left on device"):
        write_outputs(images, None, None, str(tmp_path / "png"))
    assert len(calls) == 2 and list((tmp_path / "png").iterdir()) == []


@pytest.mark.parametrize("command", [["serve"], ["replay"], ["query"], ["chains"], ["demo"], ["simulate", "lge"],
                                     ["simulate", "cine"], ["train", "cine"], ["evaluate"], ["gadgetron"],
                                     ["weights"]])
def test_help_texts_show_no_empty_defaults_and_no_markup(command, capsys):
    from cmrecon.cli import main
    with pytest.raises(SystemExit) as info:
        main(command + ["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "``" not in text and ":func:" not in text and ":class:" not in text
