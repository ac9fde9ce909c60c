"""Chain definitions: YAML and Gadgetron XML agree; bad definitions are clear ChainErrors."""

from __future__ import annotations

import ismrmrd
import pytest

from cmrecon.chain.definition import chains_dir, list_chains, load_file, load_xml, load_yaml, resolve, to_xml
from cmrecon.chain.registry import get_step, known_steps
from cmrecon.errors import ChainError

from paths import DATA


def test_every_shipped_chain_loads_and_its_xml_twin_matches():
    names = list_chains()
    assert {"passthrough", "fft_rss"} <= set(names)
    for name in names:
        d = chains_dir()
        yaml_path, xml_path = d / f"{name}.yaml", d / f"{name}.xml"
        if yaml_path.exists() and xml_path.exists():
            a, b = load_file(yaml_path), load_file(xml_path)
            assert a.steps == b.steps, f"{name}.yaml and {name}.xml differ"
            assert xml_path.read_text() == to_xml(a), f"{name}.xml is stale: regenerate with `cmrecon chains xml {name}`"


def test_resolve_by_name_with_and_without_suffix():
    assert resolve("fft_rss").steps == resolve("fft_rss.xml").steps == resolve("fft_rss.yaml").steps


@pytest.mark.parametrize("name", ["nope", "../etc/passwd", "/abs/fft_rss.xml", ".hidden", ""])
def test_unknown_or_pathlike_chain_names_list_known_chains(name):
    with pytest.raises(ChainError, match="known chains: .*fft_rss"):
        resolve(name)


def test_yaml_parameters_are_typed_and_validated():
    chain = load_yaml("steps:\n - step: fft_rss\n   params: {image_series_index: 7, use_calibration: true}\n")
    assert chain.steps[0].params.image_series_index == 7 and chain.steps[0].params.use_calibration is True
    with pytest.raises(ChainError, match="unknown parameter.*bogus.*known: image_series_index"):
        load_yaml("steps:\n - step: fft_rss\n   params: {bogus: 1}\n")
    with pytest.raises(ChainError, match="expects int"):
        load_yaml("steps:\n - step: fft_rss\n   params: {image_series_index: seven}\n")
    with pytest.raises(ChainError, match="is not one of error, identity"):
        load_yaml("steps:\n - step: noise_prewhiten\n   params: {on_missing_noise: maybe}\n")
    with pytest.raises(ChainError, match="unknown step 'nope'; known steps: .*fft_rss"):
        load_yaml("steps:\n - step: nope\n")
    with pytest.raises(ChainError, match="unknown key"):
        load_yaml("steps:\n - step: fft_rss\n   parms: {}\n")


def _xml(execute: str, extra: str = "") -> str:
    return (f"<configuration><version>2</version><stream>{extra}<external>{execute}"
            "<configuration/></external></stream></configuration>")


@pytest.mark.parametrize("execute, match", [
    ('<execute name="os" target="system" type="python"/>', "module 'os' is not allowed"),
    ('<execute name="cmrecon_gadgets" target="__import__" type="python"/>', "unknown step '__import__'"),
    ('<execute name="cmrecon_gadgets" target="fft_rss" type="matlab"/>', "type 'matlab' is not supported"),
    ('<connect port="18000"/>', "without <execute>"),
])
def test_inline_xml_can_only_name_registered_steps(execute, match):
    with pytest.raises(ChainError, match=match):
        load_xml(_xml(execute))


def test_native_gadgets_and_bad_xml_are_refused():
    gadget = "<gadget><dll>gadgetron_mricore</dll><classname>FFTGadget</classname></gadget>"
    with pytest.raises(ChainError, match="native Gadgetron gadget \\('FFTGadget'\\)"):
        load_xml(_xml('<execute name="cmrecon_gadgets" target="fft_rss" type="python"/>', gadget))
    with pytest.raises(ChainError, match="cannot be parsed"):
        load_xml("<configuration><version>2")
    with pytest.raises(ChainError, match="version 2"):
        load_xml("<configuration><stream/></configuration>")


def test_xml_properties_reach_the_step_in_both_property_forms():
    a = load_xml(_xml('<execute name="cmrecon_gadgets" target="fft_rss" type="python"/>').replace(
        "<configuration/></external>",
        '<configuration><property name="image_series_index" value="5"/></configuration></external>'))
    b = load_xml(_xml('<execute name="cmrecon_gadgets.cartesian" target="fft_rss" type="python"/>').replace(
        "<configuration/></external>",
        "<configuration><property><name>image_series_index</name><value>5</value></property>"
        "</configuration></external>"))
    assert a.steps[0].params.image_series_index == b.steps[0].params.image_series_index == 5


def test_every_step_documents_itself():
    for name in known_steps():
        spec = get_step(name)
        assert spec.summary, f"step {name} has no docstring summary"
        for pname, _, _, doc in spec.describe_params():
            assert doc, f"parameter {name}.{pname} has no doc"


def test_steps_with_python_outputs_share_one_external(monkeypatch):
    """A chain is written as one external; a step that hands Python objects on cannot end one."""
    from cmrecon.chain import registry
    from cmrecon.chain.registry import NoParams, StepSpec

    def collect(items, params, ctx):
        """Collect items into a list (a non-MRD object)."""
        yield list(items)

    def emit(items, params, ctx):
        """Flatten lists back into items."""
        for group in items:
            yield from group

    import ismrmrd
    monkeypatch.setitem(registry._REGISTRY, "t_collect",
                        StepSpec("t_collect", NoParams, collect, "c", (ismrmrd.Acquisition,), list))
    monkeypatch.setitem(registry._REGISTRY, "t_emit",
                        StepSpec("t_emit", NoParams, emit, "e", (list,), ismrmrd.Acquisition))
    chain = load_yaml("steps:\n - step: passthrough\n - step: t_collect\n - step: t_emit\n - step: fft_rss\n"
                      "   params: {image_series_index: 3}\n")
    xml = to_xml(chain)
    assert xml.count("<external>") == 1 and 'target="steps"' in xml
    assert '<step name="t_collect" />' in xml and '<step name="t_emit" />' in xml
    assert load_xml(xml).steps == chain.steps
    # hand-written XML may split a chain, but not after a step whose output is not MRD
    ungrouped = ('<configuration><version>2</version><stream>'
                 '<external><execute name="cmrecon_gadgets" target="t_collect" type="python"/></external>'
                 '<external><execute name="cmrecon_gadgets" target="t_emit" type="python"/></external>'
                 '</stream></configuration>')
    with pytest.raises(ChainError, match="step 't_collect' hands Python objects .* cannot end an <external>"):
        load_xml(ungrouped)


def test_chains_are_checked_for_type_flow_when_loaded_and_the_error_names_the_missing_step():
    """A step given a product it does not consume fails at load, naming the step that makes it."""
    with pytest.raises(ChainError, match=r"step 1 \('psir'\): step 'psir' consumes RepeatImages or "
                       r"AveragedImages, but the stream carries Acquisition there; put "
                       r"moco_average or unfold before it \(from the stream's input\)"):
        load_yaml("steps:\n - step: psir\n - step: buffer_ir_pd\n - step: emit_images\n")
    with pytest.raises(ChainError, match=r"step 3 \('unfold'\): step 'unfold' consumes MappedKspace, "
                       r"but the stream carries IrPdKspace there; put coil_maps before it \(from "
                       r"step 2 \('buffer_ir_pd'\)\)"):
        load_yaml("steps:\n - step: noise_prewhiten\n - step: buffer_ir_pd\n - step: unfold\n")
    with pytest.raises(ChainError, match=r"ends with step 3 \('coil_maps'\), which hands on "
                       r"MappedKspace, not MRD images; add a step that consumes it \(psirnet_recon, unfold\)"):
        load_yaml("steps:\n - step: noise_prewhiten\n - step: buffer_ir_pd\n - step: coil_maps\n")
    with pytest.raises(ChainError, match="'emit_images' consumes PsirImages, but the stream carries Image"):
        load_yaml("steps:\n - step: fft_rss\n - step: emit_images\n")
    # every shipped chain flows
    for name in list_chains():
        resolve(name)


def test_with_step_params_sets_one_steps_parameters_and_names_a_missing_step():
    from cmrecon.chain.definition import with_step_params
    from cmrecon.evaluate import EvaluateError, with_float_ratio

    base = resolve("psir_classic")
    chain = with_step_params(base, "psir", repeat=3)
    assert [s.params.repeat for s in chain.steps if s.name == "psir"] == [3]
    assert [s for s in chain.steps if s.name != "psir"] == [s for s in base.steps if s.name != "psir"]
    assert resolve("psir_classic") == base            # the loaded chain is not changed
    with pytest.raises(ChainError, match="has no psirnet_recon step"):
        with_step_params(base, "psirnet_recon", weights="x")
    with pytest.raises(EvaluateError, match="emit_images"):
        with_float_ratio(resolve("passthrough"))


def test_running_a_chain_leaves_the_callers_readouts_untouched():
    """noise_prewhiten used to whiten the given acquisitions in place: a second run over the
    same in-memory items then reconstructed already-whitened data.
    """
    import copy

    from cmrecon.chain.runner import run_chain
    from cmrecon.io.mrdfile import iter_items, read_header_xml
    h5 = DATA / "sim_lge_r2_embedded.h5"
    items = list(iter_items(h5))
    before = copy.deepcopy(items)
    first = [im.data.copy() for im in run_chain(resolve("psir_classic"), read_header_xml(h5), items)]
    assert all(a.data.tobytes() == b.data.tobytes() for a, b in zip(items, before))
    second = [im.data for im in run_chain(resolve("psir_classic"), read_header_xml(h5), items)]
    assert all((a == b).all() for a, b in zip(first, second))


def test_a_non_finite_readout_is_refused_naming_it_not_blamed_on_a_step():
    """One NaN sample used to give an all-NaN fft_rss image without a word."""
    import numpy as np

    from cmrecon.chain.runner import run_chain
    from cmrecon.errors import InputError
    from cmrecon.io.mrdfile import iter_items, read_header_xml
    h5 = DATA / "sim_lge_full.h5"
    items = list(iter_items(h5))
    imaging = [a for a in items if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    imaging[5].data[2, 7] = np.nan
    with pytest.raises(InputError, match=rf"scan_counter={imaging[5].scan_counter} .* 1 non-finite "
                                         r"sample\(s\), the first in channel 2 at sample 7"):
        list(run_chain(resolve("fft_rss"), read_header_xml(h5), items))


def test_a_submodule_must_define_the_step_and_odd_chain_names_are_refused_plainly():
    xml = ('<configuration><version>2</version><stream><external><execute name="{m}" target="fft_rss" '
           'type="python"/></external></stream></configuration>')
    assert load_xml(xml.format(m="cmrecon_gadgets.cartesian")).steps[0].name == "fft_rss"
    for module in ("cmrecon_gadgets.os.system", "cmrecon_gadgets.raw"):   # accepted, then ignored, before
        with pytest.raises(ChainError, match=f"module '{module}' does not define step 'fft_rss'"):
            load_xml(xml.format(m=module))
    for name in ("a" * 1023, "psir\x00classic"):   # was OSError [Errno 36] / an internal error
        with pytest.raises(ChainError, match="is not a plain name") as info:
            resolve(name)
        assert len(str(info.value)) < 400


def test_a_chain_front_hands_out_its_products_and_only_when_built_as_one():
    """``ends_in_mrd=False`` is a library caller's chain front: its products come out as they are."""
    from cmrecon.chain.definition import build_chain
    from cmrecon.chain.runner import run_file
    from cmrecon.products.lge import MappedKspace
    steps = [("noise_prewhiten", {}), ("remove_oversampling", {}), ("buffer_ir_pd", {}), ("coil_maps", {})]
    with pytest.raises(ChainError, match="not MRD images"):
        build_chain("front", steps)
    front = build_chain("front", steps, ends_in_mrd=False)
    out = list(run_file(front, DATA / "sim_lge_full.h5"))
    assert out and all(isinstance(o, MappedKspace) for o in out)
    assert {o.info.slice for o in out} == {0}


@pytest.mark.parametrize("step,chain", [("psirnet_recon", "psirnet_lge"), ("psir_refine", "psir_refine"),
                                        ("cine_crunet", None)])
def test_weights_no_chain_may_name_are_refused_when_the_chain_is_loaded(step, chain):
    """Not at the first slice: the client hears it before sending data (issue 14)."""
    from cmrecon.chain.definition import with_step_params
    with pytest.raises(ChainError, match=rf"\('{step}'\): weights='/etc/passwd' refused"):
        get_step(step).make_params({"weights": "/etc/passwd"}, where=f"chain 'x' step 5 ('{step}')")
    if chain is not None:
        with pytest.raises(ChainError, match=f"step '{step}': weights='/etc/passwd' refused"):
            with_step_params(resolve(chain), step, weights="/etc/passwd")
