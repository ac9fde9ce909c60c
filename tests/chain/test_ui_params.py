"""cmrecon.chain.ui_params: parameter JSON onto a chain, and the chain's OpenRecon-style UI JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import pytest

from cmrecon import cli
from cmrecon.chain import registry
from cmrecon.chain.definition import build_chain, list_chains, resolve
from cmrecon.chain.registry import StepSpec
from cmrecon.chain.ui_params import apply_parameters, default_parameters, names_other_chain, parameter_ids, read_parameter_text, ui_json
from cmrecon.errors import ChainError


@dataclass(frozen=True)
class TypedParams:
    flag: bool = field(default=True, metadata={"doc": "a switch"})
    count_px: int = field(default=3, metadata={"doc": "a count", "minimum": 1, "maximum": 9})
    gain: float = field(default=0.25, metadata={"doc": "a gain"})
    label: str = field(default="x", metadata={"doc": "free text"})
    mode: str = field(default="a", metadata={"doc": "a mode", "choices": ("a", "b")})
    order: int = field(default=2, metadata={"doc": "an order", "choices": (1, 2, 4)})
    size_px: tuple[int, int] = field(default=(4, 5), metadata={"doc": "a size"})
    limit: Optional[float] = field(default=None, metadata={"doc": "an optional limit"})


@pytest.fixture()
def typed_chain(monkeypatch):
    def fn(items, params, ctx):
        yield from items
    monkeypatch.setitem(registry._REGISTRY, "t_typed", StepSpec("t_typed", TypedParams, fn, "typed"))
    return build_chain("typed", [("t_typed", {"gain": 0.5})], "a test chain")


def test_each_field_type_maps_to_its_openrecon_type_with_the_chains_value_as_default(typed_chain):
    entries = {e["id"]: e for e in ui_json(typed_chain)["parameters"]}
    assert {i: (e["type"], e["default"]) for i, e in entries.items()} == {
        "config": ("choice", "typed"),
        "t_typed.flag": ("boolean", True), "t_typed.count_px": ("int", 3),
        "t_typed.gain": ("double", 0.5), "t_typed.label": ("string", "x"),
        "t_typed.mode": ("choice", "a"), "t_typed.order": ("choice", "2"),
        "t_typed.size_px": ("string", "4,5"), "t_typed.limit": ("string", "none")}
    assert entries["t_typed.mode"]["values"] == [{"id": "a", "name": {"en": "a"}}, {"id": "b", "name": {"en": "b"}}]
    assert entries["t_typed.count_px"]["minimum"] == 1 and entries["t_typed.count_px"]["maximum"] == 9
    assert entries["t_typed.gain"]["information"] == {"en": "a gain"}
    assert entries["t_typed.count_px"]["label"] == {"en": "count px (t_typed)"}


def test_defaults_sent_back_give_the_same_chain_for_every_field_type(typed_chain):
    doc = json.loads(json.dumps(default_parameters(typed_chain)))
    params = read_parameter_text(json.dumps(doc))
    assert params.chain == "typed" and not names_other_chain(params.chain, typed_chain)
    assert apply_parameters(typed_chain, params.values) == typed_chain


def test_values_are_converted_by_the_steps_dataclass(typed_chain):
    chain = apply_parameters(typed_chain, {"flag": "False", "t_typed.order": "4", "size_px": [6, 7],
                                           "limit": 1.5, "gain": "0.005"})
    p = chain.steps[0].params
    assert (p.flag, p.order, p.size_px, p.limit, p.gain) == (False, 4, (6, 7), 1.5, 0.005)
    with pytest.raises(ChainError, match=r"'order': step 't_typed' parameter 'order' = 3 is not one of 1, 2, 4"):
        apply_parameters(typed_chain, {"order": 3})


@pytest.mark.parametrize("name", list_chains())
def test_every_shipped_chains_ui_defaults_give_back_the_same_chain(name):
    chain = resolve(name)
    ui = ui_json(chain)
    ids = [e["id"] for e in ui["parameters"]]
    assert ids == ["config", *parameter_ids(chain)] and len(set(ids)) == len(ids)
    assert all(e["type"] in ("boolean", "int", "double", "choice", "string") for e in ui["parameters"])
    json.dumps(ui, allow_nan=False)
    params = read_parameter_text(json.dumps(default_parameters(chain)))
    assert apply_parameters(chain, params.values) == chain


def test_cmrecon_chains_ui_json_prints_the_chains_ui_json(capsys):
    assert cli.main(["chains", "ui-json", "fft_rss"]) == 0
    assert json.loads(capsys.readouterr().out) == ui_json(resolve("fft_rss"))


@pytest.mark.parametrize("text", ["hello", "[1, 2]", '{"version": "1.1.0"}', '{"config": "fft_rss"}'])
def test_text_that_is_not_a_parameter_set_reads_as_none(text):
    assert read_parameter_text(text) is None


def test_config_keys_name_the_chain_and_an_empty_customconfig_does_not():
    got = read_parameter_text('{"parameters": {"config": "psir_moco.xml", "customconfig": "", '
                              '"SendOriginal": "true", "psir.repeat": 1}}')
    assert (got.chain, got.ignored, got.values) == ("psir_moco.xml", ("SendOriginal",), {"psir.repeat": 1})
    moco = resolve("psir_moco")
    assert not names_other_chain("psir_moco.xml", moco) and names_other_chain("psir_classic", moco)
    assert not names_other_chain(None, moco)
