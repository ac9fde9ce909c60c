"""The container files, as far as they can be checked without a Docker engine (none runs here):
the build context holds every file the images copy, and the entrypoints work in a venv.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from paths import ROOT

DOCKER = ROOT / "docker"


def test_every_file_the_images_copy_is_in_the_build_context():
    for dockerfile in sorted(DOCKER.glob("Dockerfile*")):
        sources = []
        for line in dockerfile.read_text().splitlines():
            m = re.match(r"\s*COPY\s+(.*)", line)
            if not m or "--from=" in line:
                continue
            words = [w for w in m.group(1).split() if not w.startswith("--")]
            sources += words[:-1]
        assert sources, dockerfile.name
        for src in sources:
            assert (ROOT / src).exists(), f"{dockerfile.name} copies {src}, missing from the context"
    compose = (DOCKER / "compose.yaml").read_text()
    for name in re.findall(r"dockerfile: (\S+?)\}", compose):
        assert (ROOT / name).is_file(), name


def test_the_server_entrypoint_serves_from_a_venv_and_stops_on_sigterm():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
               CMRECON_HOST="127.0.0.1", CMRECON_PORT=str(port))
    proc = subprocess.Popen([str(DOCKER / "entrypoint-serve.sh")], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        answer = None
        for _ in range(100):
            run = subprocess.run([sys.executable, "-m", "cmrecon.cli", "query", "-p", str(port),
                                  "--timeout", "1"], capture_output=True, text=True)
            if run.returncode == 0:
                answer = run.stdout.strip()
                break
            time.sleep(0.2)
        assert answer == "ok"        # what the image's HEALTHCHECK asks
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_the_gadgetron_entrypoint_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(DOCKER / "entrypoint-gadgetron.sh")]).returncode == 0
