"""FIRE / OpenRecon parameter JSON in a session: a TEXT between the HEADER and the first data item
sets the chain's step parameters; everything a client can get wrong about it is one ERR.
"""

from __future__ import annotations

import io
import json
import logging

import ismrmrd
import numpy as np
import pytest

from cmrecon.chain.definition import list_chains, resolve, to_xml
from cmrecon.chain.ui_params import default_parameters
from cmrecon.io import protocol as P
from cmrecon.io.mrdfile import iter_items, read_header_xml
from cmrecon.server.client import replay_remote
from cmrecon.server.session import KEPT_TEXTS, Session

from paths import DATA

LGE = DATA / "sim_lge_full.h5"   # 64×48, 8 coils, one slice, one repeat: ~1-3 s per LGE chain


def _frame(*msgs) -> bytes:
    buf = io.BytesIO()
    w = P.MessageWriter(buf)
    for m in msgs:
        w.write(m)
    return buf.getvalue()


def _params(**values) -> P.Text:
    return P.Text(json.dumps({"version": "1.1.0", "parameters": values}))


class Result:
    """What one in-process session sent back."""

    def __init__(self, out: bytes, stats) -> None:
        self.texts, self.images, self.other, self.closed = [], [], [], False
        reader = P.MessageReader(io.BytesIO(out))
        while (msg := reader.read()) is not None:
            if isinstance(msg, P.Close):
                self.closed = True
            elif isinstance(msg, P.Text):
                self.texts.append(msg.text)
            elif isinstance(msg, ismrmrd.Image):
                self.images.append(msg)
            else:
                self.other.append(msg)
        self.stats = stats

    @property
    def errors(self) -> list[str]:
        return [t[4:] for t in self.texts if t.startswith("ERR ")]


def _session(config, path, *, texts=(), after_data=(), before_header=()) -> Result:
    """Run one session in process: config, ``before_header`` texts, HEADER, ``texts``, the data
    of ``path`` (``after_data`` texts after its first item), CLOSE.
    """
    items = list(iter_items(path))
    msgs = [config, *before_header, P.Header(read_header_xml(path)), *texts, items[0], *after_data,
            *items[1:], P.Close()]
    out = io.BytesIO()
    stats = Session(P.MessageReader(io.BytesIO(_frame(*msgs))), P.MessageWriter(out)).run()
    return Result(out.getvalue(), stats)


def _same_images(a, b) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert bytes(x.getHead()) == bytes(y.getHead())
        assert x.attribute_string == y.attribute_string
        assert x.data.tobytes() == y.data.tobytes()


# --- a parameter JSON changes what the chain does -----------------------------------------------

def test_a_step_parameter_by_id_changes_the_series_and_nothing_else(case):
    plain = _session(P.ConfigFile("fft_rss"), case[0])
    seven = _session(P.ConfigFile("fft_rss"), case[0], texts=[_params(**{"fft_rss.image_series_index": 7})])
    assert plain.errors == seven.errors == [] and seven.closed
    assert [im.image_series_index for im in plain.images] == [1, 1]
    assert [im.image_series_index for im in seven.images] == [7, 7]
    for a, b in zip(plain.images, seven.images):
        assert a.data.tobytes() == b.data.tobytes()
    assert seven.stats.parameters_set == 1


def test_an_unambiguous_bare_name_and_fire_style_string_values_are_accepted(case):
    got = _session(P.ConfigFile("fft_rss"), case[0],
                   texts=[_params(image_series_index="5", use_calibration="False")])
    assert got.errors == [] and [im.image_series_index for im in got.images] == [5, 5]


def test_psir_classic_with_float_ratio_and_no_magir_emits_the_ratio_itself():
    plain = _session(P.ConfigFile("psir_classic"), LGE)
    ratio = _session(P.ConfigFile("psir_classic"), LGE,
                     texts=[_params(**{"emit_images.float_ratio": True, "emit_magir": False})])
    assert ratio.errors == []
    assert len(plain.images) == 2 and len(ratio.images) == 1   # PSIR + MagIR -> PSIR only
    meta = ismrmrd.Meta.deserialize(ratio.images[0].attribute_string)
    assert meta["GADGETRON_ScaleOffset"] == "0" and meta["cmrecon_float_ratio"] == "true"
    scaled = plain.images[0].data.astype(np.float64)
    # float32 storage of ratio*1000 + 4096 (|values| < 2^13): rounding < 2^-23 * 2^13 / 1000 < 1e-6
    np.testing.assert_allclose(ratio.images[0].data, (scaled - 4096.0) / 1000.0, rtol=0, atol=2e-6)


def test_every_shipped_chains_ui_defaults_give_the_same_images_as_sending_nothing(one_torch_thread):
    """The UI JSON's defaults are the chain's own values: sent back, they change nothing."""
    lge_chains = [n for n in list_chains() if "buffer_cine" not in {s.name for s in resolve(n).steps}]
    assert {"fft_rss", "psir_classic", "psir_moco", "psirnet_lge"} <= set(lge_chains)
    for name in lge_chains:
        defaults = P.Text(json.dumps(default_parameters(resolve(name))))
        plain = _session(P.ConfigFile(name), LGE)
        sent = _session(P.ConfigFile(name), LGE, texts=[defaults])
        assert plain.errors == sent.errors == [], name
        if name == "passthrough":
            assert len(sent.other) == len(plain.other) > 0
            continue
        _same_images(plain.images, sent.images)


# --- config / customconfig: python-ismrmrd-server's chain selection -----------------------------

def test_config_in_the_json_selects_another_chain_for_a_named_session(case):
    got = _session(P.ConfigFile("passthrough"), case[0], texts=[_params(config="fft_rss")])
    assert got.errors == [] and len(got.images) == 2 and got.stats.chain == "fft_rss"
    got = _session(P.ConfigFile("passthrough"), case[0],
                   texts=[_params(config="passthrough", customconfig="fft_rss.xml")])
    assert got.errors == [] and len(got.images) == 2   # a non-empty customconfig wins


def test_config_naming_another_chain_than_inline_xml_is_an_error(case):
    inline = P.ConfigText(to_xml(resolve("fft_rss")))
    got = _session(inline, case[0], texts=[_params(config="psir_classic")])
    assert got.closed and "came inline as CONFIG_TEXT" in got.errors[0]
    got = _session(P.ConfigFile("fft_rss"), case[0], texts=[_params(config="no_such_chain")])
    assert "unknown chain 'no_such_chain'" in got.errors[0]


def test_send_original_is_ignored_with_an_info_line(case, caplog):
    with caplog.at_level(logging.INFO, logger="cmrecon.session"):
        got = _session(P.ConfigFile("fft_rss"), case[0], texts=[_params(sendOriginal="True")])
    assert got.errors == [] and len(got.images) == 2
    assert "'sendOriginal' (a python-ismrmrd-server option) means nothing" in caplog.text


def test_text_that_is_not_a_parameter_set_is_logged_as_before(case):
    texts = [P.Text("hello"), P.Text(json.dumps({"version": "1.1.0", "note": "no parameters"}))]
    got = _session(P.ConfigFile("fft_rss"), case[0], texts=texts, after_data=[P.Text("still plain")],
                   before_header=[P.Text("early")])
    assert got.errors == [] and len(got.images) == 2
    assert got.stats.texts_count == 4 and got.stats.parameters_set == 0


def test_kept_client_texts_stay_bounded_with_a_parameter_json_among_them(case):
    texts = [P.Text(f"t{i}") for i in range(KEPT_TEXTS + 10)] + [_params(image_series_index=3)]
    got = _session(P.ConfigFile("fft_rss"), case[0], texts=texts)
    assert got.errors == [] and got.stats.texts_count == KEPT_TEXTS + 11
    assert len(got.stats.texts_in) == KEPT_TEXTS


# --- everything wrong is one ERR, before any data is processed -----------------------------------

BAD = {
    "unknown id": ({"fft_rss.image_series": 2},
                   "unknown parameter 'fft_rss.image_series': step 'fft_rss' has no parameter 'image_series'; "
                   "did you mean fft_rss.image_series_index?; valid names: fft_rss.image_series_index, "
                   "fft_rss.use_calibration"),
    "unknown step": ({"psir.repeat": 0}, "chain 'fft_rss' has no step 'psir' (its steps: noise_prewhiten, "
                                         "remove_oversampling, fft_rss)"),
    "unknown bare name": ({"lambda_s": 0.1}, "unknown parameter 'lambda_s': no step of the chain"),
    "bad type": ({"fft_rss.image_series_index": "seven"},
                 "'fft_rss.image_series_index': step 'fft_rss' parameter 'image_series_index' expects int, "
                 "got 'seven'"),
    "not an integer": ({"image_series_index": 2.5}, "expects an integer, got 2.5"),
    "outside choices": ({"on_missing_noise": "ignore"},
                        "parameter 'on_missing_noise' = 'ignore' is not one of error, identity"),
    "set twice": ({"image_series_index": 2, "fft_rss.image_series_index": 3},
                  "'fft_rss.image_series_index' and 'image_series_index' both set fft_rss.image_series_index"),
    "config not text": ({"config": 3}, "'config' names a chain and must be text, got a number 3"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_parameter_json_ends_the_session_with_err_before_any_data(case, name):
    values, expected = BAD[name]
    got = _session(P.ConfigFile("fft_rss"), case[0], texts=[_params(**values)])
    assert got.closed and len(got.errors) == 1 and expected in got.errors[0], got.errors
    assert got.images == [] and got.stats.items_in == 0


def test_every_problem_of_one_json_is_in_the_one_err(case):
    got = _session(P.ConfigFile("fft_rss"), case[0],
                   texts=[_params(nope=1, image_series_index="x", on_missing_noise="later")])
    assert "'nope'" in got.errors[0] and "expects int" in got.errors[0] and "not one of" in got.errors[0]


def test_an_ambiguous_bare_name_lists_its_candidates():
    got = _session(P.ConfigFile("psir_classic"), LGE, texts=[_params(window_px=5)])
    assert got.errors == ["parameter JSON for chain 'psir_classic': parameter 'window_px' is ambiguous: "
                          "steps coil_maps, psir all have it; send one of coil_maps.window_px, psir.window_px"]


@pytest.mark.parametrize("text, expected", [
    ('{"parameters": {"image_series_index": 2', "client TEXT starts with '{' but is not JSON"),
    (json.dumps({"parameters": [{"id": "fft_rss.image_series_index", "default": 1}]}),
     "'parameters' must be an object of id: value, got a list (a list of entries is the UI description"),
])
def test_broken_json_and_a_ui_description_sent_as_values_are_errors(case, text, expected):
    got = _session(P.ConfigFile("fft_rss"), case[0], texts=[P.Text(text)])
    assert got.closed and expected in got.errors[0] and got.stats.items_in == 0


def test_a_parameter_json_after_data_started_is_an_error_not_ignored(case):
    got = _session(P.ConfigFile("fft_rss"), case[0], after_data=[_params(image_series_index=7)])
    assert got.closed and got.images == []
    assert got.errors == ["a parameter JSON arrived after 1 data item(s); it is read only between the "
                          "HEADER (3) and the first data item"]


def test_a_parameter_json_before_the_header_or_a_second_one_is_an_error(case):
    early = _session(P.ConfigFile("fft_rss"), case[0], before_header=[_params(image_series_index=7)])
    assert "a parameter JSON arrived while the server expected HEADER (3)" in early.errors[0]
    twice = _session(P.ConfigFile("fft_rss"), case[0],
                     texts=[_params(image_series_index=7), _params(use_calibration=True)])
    assert twice.errors == ["a second parameter JSON before the data; send all parameters in one"]


def test_over_tcp_an_unknown_key_closes_that_session_and_the_server_keeps_serving(server, case):
    import socket
    items = list(iter_items(case[0]))
    payload = _frame(P.ConfigFile("fft_rss"), P.Header(read_header_xml(case[0])),
                     _params(**{"fft_rss.colour": "red"}), *items, P.Close())
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s, s.makefile("rb") as f:
        s.sendall(payload)
        reader = P.MessageReader(f)
        texts, closed = [], False
        while (msg := reader.read()) is not None:
            if isinstance(msg, P.Close):
                closed = True
                break
            if isinstance(msg, P.Text):
                texts.append(msg.text)
    assert closed and len(texts) == 1 and texts[0].startswith("ERR ") and "'fft_rss.colour'" in texts[0]
    assert len(replay_remote(case[0], port=server.port, chain_name="fft_rss").images) == 2
