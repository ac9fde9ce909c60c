"""Chain definitions: YAML (ours) and Gadgetron chain XML (version 2), one-to-one.

A chain is an ordered list of registered steps with typed parameters. YAML::

    name: fft_rss
    description: ...
    steps:
      - step: noise_prewhiten
      - step: fft_rss
        params: {repeat_counter: average}

Gadgetron XML (what a real Gadgetron 4.x loads; each step runs as an external Python gadget)::

    <configuration><version>2</version>
      <readers>...</readers><writers>...</writers>
      <stream>
        <external>
          <execute name="cmrecon_gadgets" target="fft_rss" type="python"/>
          <configuration><property name="repeat_counter" value="average"/></configuration>
        </external>
      </stream>
    </configuration>

Only registered steps of the ``cmrecon_gadgets`` package may be named: a client's inline XML can
never import arbitrary Python.

In a real Gadgetron every ``<external>`` is its own process, so only MRD items (acquisitions,
waveforms, images) can pass between externals, and each one costs a process start per session.
:func:`to_xml` therefore writes the whole chain as one external that runs its steps in order
(hand-written XML may still split a chain where only MRD items cross; a step that hands
a typed product that is not an MRD item to its successor must share its successor's
external)::

    <external>
      <execute name="cmrecon_gadgets" target="steps" type="python"/>
      <configuration>
        <step name="buffer_ir_pd"><property name="repeat_counter" value="average"/></step>
        <step name="coil_maps"/>
      </configuration>
    </external>
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ismrmrd
import yaml

from cmrecon.chain.registry import MRD_TYPES, get_step, known_steps, params_to_strings
from cmrecon.errors import ChainError, CmreconError

GADGET_MODULE = "cmrecon_gadgets"
GROUP_TARGET = "steps"  # an <external> that runs several steps in one process
# Gadgetron's standard readers/writers; our runtime reads and writes these types itself.
_KNOWN_READERS = {"AcquisitionReader", "WaveformReader", "ImageReader", "AcquisitionBucketReader"}
_KNOWN_WRITERS = {"ImageWriter", "AcquisitionWriter", "WaveformWriter", "BufferWriter",
                  "ImageArrayWriter", "IsmrmrdImageArrayWriter"}


@dataclass(frozen=True)
class StepConfig:
    """One step of a chain: its registered name and parsed parameters."""

    name: str
    params: Any


@dataclass(frozen=True)
class Chain:
    """An ordered, validated list of steps.

    ``ends_in_mrd`` is False only for the front part of a chain built by a library caller
    (:func:`build_chain`), whose last products are handed out as they are.
    """

    name: str
    steps: tuple[StepConfig, ...]
    description: str = ""
    ends_in_mrd: bool = True


def with_step_params(chain: Chain, step: str, **params: Any) -> Chain:
    """A copy of ``chain`` with ``params`` set on every step named ``step``.

    Raises
    ------
    ChainError
        The chain has no such step, or the step's check refuses the new parameters
        (``dataclasses.replace`` raises TypeError for an unknown parameter name).
    """
    if not any(s.name == step for s in chain.steps):
        raise ChainError(f"chain '{chain.name}' has no {step} step")
    spec = get_step(step)
    new = replace(chain, steps=tuple(replace(s, params=replace(s.params, **params))
                                     if s.name == step else s for s in chain.steps))
    if spec.check is not None:
        for s in new.steps:
            if s.name == step:
                try:
                    spec.check(s.params)
                except (CmreconError, ValueError) as exc:
                    raise ChainError(f"chain '{chain.name}' step '{step}': {exc}") from exc
    return new


def chains_dir() -> Path:
    """Where named chains live: ``$CMRECON_CHAINS``, else the data package ``cmrecon_chains``."""
    from cmrecon.runtime import data_dir
    return data_dir("CMRECON_CHAINS", "cmrecon_chains")


def list_chains(directory: Path | None = None) -> list[str]:
    """Names of every chain file (``<name>.yaml`` or ``<name>.xml``), sorted, without suffix."""
    d = directory or chains_dir()
    if not d.is_dir():
        return []
    return sorted({p.stem for p in d.iterdir() if p.suffix in (".yaml", ".yml", ".xml")})


def build_chain(name: str, steps: list[tuple[str, dict[str, Any]]], description: str = "",
                ends_in_mrd: bool = True) -> Chain:
    """A validated chain from ``[(step name, raw parameters)]`` (unknown steps/parameters raise ChainError).

    ``ends_in_mrd=False`` builds the front part of a chain, whose products a library caller
    takes as they are (e.g. a learned model's training inputs, made by the chain's own steps).
    """
    if not steps:
        raise ChainError(f"chain '{name}' has no steps")
    built = []
    for i, (step_name, raw) in enumerate(steps):
        spec = get_step(step_name)
        where = f"chain '{name}' step {i + 1} ('{step_name}')"
        params = spec.make_params(raw, where=where)
        built.append(StepConfig(step_name, params))
    check_type_flow(name, [s.name for s in built], ends_in_mrd)
    return Chain(name, tuple(built), description, ends_in_mrd)


def check_type_flow(name: str, steps: list[str], ends_in_mrd: bool = True) -> None:
    """Check that each step consumes what its predecessor hands on and (``ends_in_mrd``) the chain ends in MRD items.

    The stream starts as MRD acquisitions; each step's ``consumes``/``produces``
    (:func:`cmrecon.chain.registry.register`) moves it on.

    Raises
    ------
    ChainError
        A step given a type it does not consume (naming the steps that make what it needs), or
        a chain whose last step hands on a product that is not an MRD item.
    """
    carried, source = ismrmrd.Acquisition, "the stream's input"
    for i, step_name in enumerate(steps):
        spec = get_step(step_name)
        try:
            carried = spec.output_type(carried)
        except ChainError as exc:
            raise ChainError(f"chain '{name}' step {i + 1} ('{step_name}'): {exc} (from "
                             f"{source})") from None
        source = f"step {i + 1} ('{step_name}')"
    if ends_in_mrd and not issubclass(carried, MRD_TYPES):
        users = [s for s in known_steps() if get_step(s).consumes
                 and issubclass(carried, get_step(s).consumes)]
        raise ChainError(f"chain '{name}' ends with {source}, which hands on {carried.__name__}, "
                         f"not MRD images; add a step that consumes it ({', '.join(users)})")


def load_yaml(text: str, name: str | None = None) -> Chain:
    """Build a chain from our YAML format.

    Raises
    ------
    ChainError
        Malformed YAML, missing ``steps``, unknown step or parameter.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ChainError(f"chain YAML cannot be parsed: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        raise ChainError("chain YAML must be a mapping with a 'steps' list")
    unknown = sorted(set(doc) - {"name", "description", "steps"})
    if unknown:
        raise ChainError(f"chain YAML has unknown key(s) {', '.join(unknown)}; "
                         "known: name, description, steps")
    steps = []
    for i, entry in enumerate(doc["steps"]):
        if not isinstance(entry, dict) or "step" not in entry:
            raise ChainError(f"chain YAML step {i + 1} must be a mapping with a 'step' key, got {entry!r}")
        extra = sorted(set(entry) - {"step", "params"})
        if extra:
            raise ChainError(f"chain YAML step {i + 1} has unknown key(s) {', '.join(extra)}; "
                             "known: step, params")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise ChainError(f"chain YAML step {i + 1} 'params' must be a mapping")
        steps.append((str(entry["step"]), params))
    return build_chain(str(doc.get("name") or name or "inline"), steps, str(doc.get("description") or ""))


def load_xml(text: str | bytes, name: str | None = None) -> Chain:
    """Build a chain from Gadgetron chain XML (version 2) whose stream holds ``<external>`` steps.

    Raises
    ------
    ChainError
        Malformed XML, a native ``<gadget>`` (needs a real Gadgetron), ``<connect>``, a module
        outside ``cmrecon_gadgets``, a non-python external, an unknown step or parameter.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ChainError(f"chain XML cannot be parsed: {exc}") from exc
    if root.tag != "configuration":
        raise ChainError(f"chain XML root must be <configuration>, got <{root.tag}>")
    version = (root.findtext("version") or "").strip()
    if version != "2":
        raise ChainError(f"chain XML must be Gadgetron format version 2, got version '{version or 'missing'}'")
    for section, tag, known in (("readers", "reader", _KNOWN_READERS), ("writers", "writer", _KNOWN_WRITERS)):
        for el in root.findall(f"{section}/{tag}"):
            cls = (el.findtext("classname") or "").strip()
            if cls not in known:
                raise ChainError(f"chain XML {tag} '{cls}' is not supported; known: {', '.join(sorted(known))}")
    stream = root.find("stream")
    if stream is None:
        raise ChainError("chain XML has no <stream>")
    steps = []
    for i, el in enumerate(stream):
        where = f"chain XML stream element {i + 1}"
        if el.tag == "gadget":
            cls = el.findtext("classname") or "?"
            raise ChainError(f"{where} is a native Gadgetron gadget ('{cls}'); cmrecon runs only "
                             f"<external> steps of {GADGET_MODULE}: run this chain in a real Gadgetron")
        if el.tag != "external":
            raise ChainError(f"{where}: <{el.tag}> is not supported (only <external>)")
        execute = el.find("execute")
        if execute is None:
            raise ChainError(f"{where}: <external> without <execute> (a <connect> to a running "
                             "process is for a real Gadgetron, not cmrecon serve)")
        module = execute.get("name", "")
        target = execute.get("target", "")
        kind = execute.get("type", "")
        if kind != "python":
            raise ChainError(f"{where}: external type '{kind}' is not supported (only python)")
        if module != GADGET_MODULE and not module.startswith(GADGET_MODULE + "."):
            raise ChainError(f"{where}: module '{module}' is not allowed; steps must come from {GADGET_MODULE}")
        if not target:
            raise ChainError(f"{where}: <execute> has no target")
        if module != GADGET_MODULE:   # a submodule must be the one that defines the step
            fn = get_step(target).fn if target != GROUP_TARGET else None
            defined_in = getattr(getattr(fn, "__wrapped__", fn), "__module__", None)
            if defined_in != module:
                raise ChainError(f"{where}: module '{module}' does not define step '{target}'; name "
                                 f"module '{GADGET_MODULE}'")
        group = (group_steps(el.find("configuration"), where) if target == GROUP_TARGET
                 else [(target, xml_properties(el.find("configuration"), where))])
        last = group[-1][0]
        if not get_step(last).produces_mrd:
            raise ChainError(f"{where}: step '{last}' hands Python objects to its successor, so it "
                             f"cannot end an <external> process; group it with the next step "
                             f"(target='{GROUP_TARGET}')")
        steps.extend(group)
    return build_chain(name or "inline", steps, (root.findtext("description") or "").strip())


def xml_properties(config: ET.Element | None, where: str = "configuration") -> dict[str, str]:
    """``{name: value}`` from ``<property name=".." value=".."/>`` children of a <configuration>.

    The older ``<property><name>..</name><value>..</value></property>`` form is accepted too.
    """
    props: dict[str, str] = {}
    if config is None:
        return props
    for prop in config.findall("property"):
        key = prop.get("name") or (prop.findtext("name") or "").strip()
        value = prop.get("value")
        if value is None:
            value = (prop.findtext("value") or "").strip()
        if not key:
            raise ChainError(f"{where}: <property> without a name")
        if key in props:
            raise ChainError(f"{where}: property '{key}' given twice")
        props[key] = value
    return props


def group_steps(config: ET.Element | None, where: str) -> list[tuple[str, dict[str, str]]]:
    """``[(step, properties)]`` of a grouped external's ``<configuration><step name=..>`` children."""
    if config is None or not config.findall("step"):
        raise ChainError(f"{where}: target '{GROUP_TARGET}' needs <step name=...> entries in its <configuration>")
    out = []
    for j, st in enumerate(config.findall("step")):
        name = st.get("name", "")
        if not name:
            raise ChainError(f"{where}: <step> {j + 1} has no name")
        out.append((name, xml_properties(st, f"{where} step '{name}'")))
    return out


def _external_groups(chain: Chain) -> list[list[StepConfig]]:
    """The whole chain in one external: one Python process to start per session.

    Gadgetron starts every ``<external>`` of a chain as its own ``python -m gadgetron`` process
    when a session begins; each costs an interpreter and our imports (0.5-1 s on 2 cores, more
    when they start at once), and items between them cross a socket.
    """
    return [list(chain.steps)]


def _add_properties(parent: ET.Element, params: Any) -> None:
    defaults = params_to_strings(type(params)())
    for key, value in params_to_strings(params).items():
        if value != defaults[key]:
            ET.SubElement(parent, "property", name=key, value=value)


def to_xml(chain: Chain) -> str:
    """Render a chain as Gadgetron chain XML (version 2) that a real Gadgetron can load."""
    root = ET.Element("configuration")
    ET.SubElement(root, "version").text = "2"
    readers = ET.SubElement(root, "readers")
    for cls in ("AcquisitionReader", "WaveformReader"):
        r = ET.SubElement(readers, "reader")
        ET.SubElement(r, "dll").text = "gadgetron_core_readers"
        ET.SubElement(r, "classname").text = cls
    writers = ET.SubElement(root, "writers")
    w = ET.SubElement(writers, "writer")
    ET.SubElement(w, "dll").text = "gadgetron_core_writers"
    ET.SubElement(w, "classname").text = "ImageWriter"
    stream = ET.SubElement(root, "stream")
    for group in _external_groups(chain):
        ext = ET.SubElement(stream, "external")
        if len(group) == 1:
            ET.SubElement(ext, "execute", name=GADGET_MODULE, target=group[0].name, type="python")
            _add_properties(ET.SubElement(ext, "configuration"), group[0].params)
            continue
        ET.SubElement(ext, "execute", name=GADGET_MODULE, target=GROUP_TARGET, type="python")
        conf = ET.SubElement(ext, "configuration")
        for step in group:
            _add_properties(ET.SubElement(conf, "step", name=step.name), step.params)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def load_file(path: str | Path) -> Chain:
    """Load a chain file by its suffix (``.yaml``/``.yml`` or ``.xml``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ChainError(f"cannot read chain file {p}: {exc}") from exc
    if p.suffix in (".yaml", ".yml"):
        return load_yaml(text, p.stem)
    if p.suffix == ".xml":
        return load_xml(text, p.stem)
    raise ChainError(f"chain file {p} must end in .yaml, .yml or .xml")


def resolve(name: str, directory: Path | None = None) -> Chain:
    """Resolve a chain by the name a console or client sends (``psir_classic``, ``psir_classic.xml``).

    ``<name>.yaml`` is preferred; ``<name>.xml`` is used when only it exists or the name says .xml.

    Raises
    ------
    ChainError
        No such chain (the message lists the known chains) or a path-like name.
    """
    d = directory or chains_dir()
    clean = name.strip()
    if (not clean or "/" in clean or "\\" in clean or clean.startswith(".") or len(clean) > 200
            or not clean.isprintable()):
        shown = repr(name[:80]) + ("…" if len(name) > 80 else "")
        raise ChainError(f"chain name {shown} is not a plain name; known chains: "
                         f"{', '.join(list_chains(d)) or 'none'}")
    stem, suffix = os.path.splitext(clean)
    candidates = ([d / clean] if suffix in (".yaml", ".yml", ".xml")
                  else [d / f"{clean}.yaml", d / f"{clean}.yml", d / f"{clean}.xml"])
    for c in candidates:
        if c.is_file():
            return load_file(c)
    raise ChainError(f"unknown chain '{name}'; known chains: {', '.join(list_chains(d)) or 'none'}")
