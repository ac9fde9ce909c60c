"""The process-wide model cache: a slow load stalls only the sessions asking for the same weights.

The cache's lock used to be held while a weights file was hashed and deserialised, so one slow
(huge, or crafted) file stalled every later psirnet session of the server, whatever weights
they used.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from cmrecon.models import serving, weights
from cmrecon.models.psirnet import PSIRNet
from cmrecon.models.weights import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_model_cache")

TINY = dict(num_cascades=1, chans=4, sens_chans=2, pools=2, sens_pools=2)
#: Seconds a test waits for something that should happen at once (generous: a busy machine).
PROMPT_S = 20.0


@pytest.fixture()
def two_checkpoints(weights_folder) -> tuple[Path, Path]:
    out = []
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        model = PSIRNet(**TINY)
        save_checkpoint(weights_folder / name, model, model.model_config(), {})
        out.append(weights_folder / name)
    return out[0], out[1]


class _Gate:
    """Makes loads of one file wait until released; counts every load."""

    def __init__(self, monkeypatch, name: str, fail: bool = False):
        self.name, self.fail = name, fail
        self.started, self.release = threading.Event(), threading.Event()
        self.loads: list[str] = []
        real = weights.load_verified

        def load(path, *args, **kwargs):
            self.loads.append(Path(path).name)
            if Path(path).name == self.name:
                self.started.set()
                assert self.release.wait(PROMPT_S * 3), "the test never released the load"
                if self.fail:
                    raise weights.WeightsError("the gated load failed")
            return real(path, *args, **kwargs)
        monkeypatch.setattr(weights, "load_verified", load)


def _in_thread(fn, *args, **kwargs):
    """Start ``fn`` in a thread; returns (thread, box) where box gets 'value' or 'error'."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:   # reported to the test through box
            box["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_a_blocked_load_of_weights_a_does_not_block_cached_weights_b(two_checkpoints, monkeypatch):
    a, b = two_checkpoints
    cached_b = serving.get_model(str(b), "cpu", warm_up=False)
    gate = _Gate(monkeypatch, "a.pt")
    loading_a, box_a = _in_thread(serving.get_model, str(a), "cpu", warm_up=False)
    try:
        assert gate.started.wait(PROMPT_S)            # A's load is under way, and stuck
        asking_b, box_b = _in_thread(serving.get_model, str(b), "cpu", warm_up=False)
        asking_b.join(PROMPT_S)
        assert not asking_b.is_alive(), "get_model for cached weights waited for another load"
        assert box_b == {"value": cached_b}
        # a second session asking for A waits for that same load instead of starting another
        waiting_a, box_a2 = _in_thread(serving.get_model, str(a), "cpu", warm_up=False)
        waiting_a.join(0.2)
        assert waiting_a.is_alive() and loading_a.is_alive()
    finally:
        gate.release.set()
    loading_a.join(PROMPT_S)
    waiting_a.join(PROMPT_S)
    assert "error" not in box_a and "error" not in box_a2, (box_a, box_a2)
    assert box_a["value"] is box_a2["value"] is serving.get_model(str(a), "cpu", warm_up=False)
    assert gate.loads == ["a.pt"]                     # B came from the cache, A loaded once


def test_a_failed_load_reaches_every_waiting_session_and_is_not_cached(two_checkpoints, monkeypatch):
    a, _ = two_checkpoints
    gate = _Gate(monkeypatch, "a.pt", fail=True)
    first, box1 = _in_thread(serving.get_model, str(a), "cpu", warm_up=False)
    try:
        assert gate.started.wait(PROMPT_S)
        second, box2 = _in_thread(serving.get_model, str(a), "cpu", warm_up=False)
        second.join(0.2)
        assert second.is_alive()
    finally:
        gate.release.set()
    first.join(PROMPT_S)
    second.join(PROMPT_S)
    for box in (box1, box2):
        assert isinstance(box.get("error"), weights.WeightsError), box
    assert gate.loads == ["a.pt"]
    gate.fail = False                                 # the next session tries again
    assert isinstance(serving.get_model(str(a), "cpu", warm_up=False).model, PSIRNet)
    assert gate.loads == ["a.pt", "a.pt"]
