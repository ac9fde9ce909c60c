"""Weights a chain may name: shipped names or files inside the weights folders, nothing else.

A chain's ``weights`` comes from whoever sent the chain (a client's inline XML): a path outside
the weights folders is refused with one message whether or not the file exists, so the error
reply tells a client nothing about the server's file system.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cmrecon import runtime
from cmrecon.models import serving, shipped
from cmrecon.models.psirnet import PSIRNet
from cmrecon.models.weights import WeightsError, save_checkpoint

from paths import DATA

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_model_cache")

TINY = dict(num_cascades=1, chans=4, sens_chans=2, pools=2, sens_pools=2)


def _checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = PSIRNet(**TINY)
    save_checkpoint(path, model, model.model_config(), {})
    return path


@pytest.fixture()
def outside(tmp_path_factory) -> Path:
    """A valid checkpoint (with its sidecar) in a folder that is not a weights folder."""
    return _checkpoint(tmp_path_factory.mktemp("outside") / "elsewhere.pt")


def _refusal(spec: str) -> str:
    """The refusal message for ``spec``, with ``spec`` itself (the caller's own text) masked."""
    with pytest.raises(WeightsError) as info:
        shipped.resolve_chain_weights(spec)
    message = str(info.value)
    assert repr(spec) in message
    return message.replace(repr(spec), "<spec>")


def test_shipped_names_resolve_to_their_file_and_registry_digest():
    path, digest = shipped.resolve_chain_weights("psirnet_cpu_small")
    assert path == shipped.shipped_path("psirnet_cpu_small")
    assert digest == shipped.SHIPPED["psirnet_cpu_small"]["sha256"]


def test_a_file_that_exists_and_one_that_does_not_get_the_identical_refusal(weights_folder, outside):
    specs = ["/etc/passwd", "/etc/shadow", "/etc", "/no/such/weights.pt", str(outside),
             str(outside.with_name("absent.pt")), "no_such_weights", "", "a\x00b"]
    messages = {spec: _refusal(spec) for spec in specs}
    assert len(set(messages.values())) == 1, messages
    message = messages["/etc/passwd"]
    assert "psirnet_cpu_small" in message and "CMRECON_WEIGHTS_PATH" in message
    assert str(weights_folder) not in message   # the server's folders are not told either


def test_a_checkpoint_inside_a_weights_folder_loads(weights_folder):
    path = _checkpoint(weights_folder / "runs" / "best.pt")
    assert shipped.resolve_chain_weights(str(path)) == (path.resolve(), None)
    entry = serving.get_model(str(path), "cpu", warm_up=False)
    assert isinstance(entry.model, PSIRNet) and entry.path == path.resolve()
    # `..` that stays inside the folder is fine: the real location is what counts
    inside = weights_folder / "runs" / ".." / "runs" / "best.pt"
    assert shipped.resolve_chain_weights(str(inside))[0] == path.resolve()


def test_a_relative_path_is_taken_from_the_working_folder_and_checked_the_same(weights_folder,
                                                                               monkeypatch):
    path = _checkpoint(weights_folder / "best.pt")
    monkeypatch.chdir(weights_folder)
    assert shipped.resolve_chain_weights("best.pt")[0] == path.resolve()
    monkeypatch.chdir(weights_folder.parent)
    assert _refusal("best.pt") == _refusal("/etc/passwd")


def test_dot_dot_escapes_and_symlinks_out_of_the_folder_are_refused(weights_folder, outside):
    assert _refusal(str(weights_folder / ".." / outside.parent.name / outside.name)) \
        == _refusal("/etc/passwd")
    link = weights_folder / "link.pt"
    link.symlink_to(outside)
    (weights_folder / "linked_sidecar.pt.sha256").symlink_to(outside.with_name(outside.name + ".sha256"))
    assert _refusal(str(link)) == _refusal("/etc/passwd")
    folder_link = weights_folder / "elsewhere"
    folder_link.symlink_to(outside.parent, target_is_directory=True)
    assert _refusal(str(folder_link / outside.name)) == _refusal("/etc/passwd")
    (weights_folder / "passwd").symlink_to("/etc/passwd")
    assert _refusal(str(weights_folder / "passwd")) == _refusal("/etc/passwd")
    with pytest.raises(WeightsError, match="refused"):
        serving.get_model(str(link), "cpu", warm_up=False)


def test_a_symlink_inside_the_folder_to_a_file_inside_it_loads_the_real_file(weights_folder):
    real = _checkpoint(weights_folder / "runs" / "7" / "best.pt")
    link = weights_folder / "current.pt"
    link.symlink_to(real)
    assert shipped.resolve_chain_weights(str(link)) == (real.resolve(), None)


def test_a_configured_folder_reached_through_a_symlink_still_contains_its_files(tmp_path,
                                                                                monkeypatch):
    real = tmp_path / "real"
    path = _checkpoint(real / "best.pt")
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    monkeypatch.setattr(runtime, "_configured", runtime.Settings(weights_path=(str(tmp_path / "alias"),)))
    assert shipped.resolve_chain_weights(str(tmp_path / "alias" / "best.pt"))[0] == path.resolve()
    assert shipped.resolve_chain_weights(str(path))[0] == path.resolve()


def test_without_configured_folders_only_the_shipped_folder_is_allowed(outside, monkeypatch):
    monkeypatch.setattr(runtime, "_configured", runtime.Settings())
    assert shipped.weights_folders() == (Path(os.path.realpath(shipped.weights_dir())),)
    assert _refusal(str(outside)) == _refusal("/etc/passwd")


def test_weights_folders_come_from_the_flag_else_the_environment(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    env = {runtime.WEIGHTS_PATH_ENV: f"{a}{os.pathsep}{os.pathsep}{b}"}
    assert runtime.Settings.build(environ=env).weights_path == (str(a), str(b))  # "" is no folder
    assert runtime.Settings.build(environ={}).weights_path == ()
    assert runtime.Settings.build(environ=env, weights_path=[str(b)]).weights_path == (str(b),)
    monkeypatch.chdir(tmp_path)
    assert runtime.Settings.build(environ={runtime.WEIGHTS_PATH_ENV: "a"}).weights_path == (str(a),)
    assert runtime.Settings.build(threads=2, environ=env) == runtime.Settings(2, 2, (str(a), str(b)))


def test_over_the_wire_the_client_cannot_tell_which_paths_exist(server, outside):
    """A chain sent inline (CONFIG_TEXT) naming files of the server: the same ERR for each."""
    from dataclasses import replace

    from cmrecon.chain.definition import resolve, to_xml
    from cmrecon.server.client import ReplayError, replay_remote
    replies = {}
    chain = resolve("psirnet_lge")
    for spec in ("/etc/passwd", "/no/such/weights.pt", str(outside)):
        # a client's own XML: written here without the load-time check our side would make
        bad = replace(chain, steps=tuple(replace(s, params=replace(s.params, weights=spec))
                                         if s.name == "psirnet_recon" else s for s in chain.steps))
        xml = to_xml(bad)
        with pytest.raises(ReplayError) as info:
            replay_remote(DATA / "sim_lge_r2_embedded.h5", port=server.port, chain_xml=xml,
                          timeout_s=60)
        replies[spec] = str(info.value).replace(repr(spec), "<spec>")
    assert len(set(replies.values())) == 1, replies
    assert "refused" in replies["/etc/passwd"]
