"""Everyday CLI mistakes: one line, a nonzero exit, no traceback, nothing run in vain."""

from __future__ import annotations

import socket
import subprocess
import sys

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
