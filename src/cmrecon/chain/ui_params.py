"""FIRE / OpenRecon parameter JSON, both ways: a client's values onto a chain's typed step parameters,
and a chain's parameters described in the OpenRecon UI-parameter layout.

Every parameter of every step of a chain has one id, ``<step>.<param>`` (``psir.repeat``,
``cine_lps.lambda_s``); where only one step of the chain has a parameter of that name, the bare
name (``repeat``) means the same. Both directions use these ids (docs/protocol.md, "Parameter
JSON"):

* :func:`read_parameter_text` reads the JSON a client sends as TEXT after the MRD header
  (python-ismrmrd-server's "additional config", ``{"version": "1.1.0", "parameters": {id: value}}``);
  :func:`apply_parameters` validates each value with its step's parameter dataclass
  (:mod:`cmrecon.params`, the parser chain files use) and returns the chain with them set.
* :func:`ui_json` lists a chain's parameters as OpenRecon-style entries (``id``, ``label``,
  ``type``, ``default``, ``information``, ``values`` for choices) whose defaults are the chain's
  own values, so sending them back changes nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass
from typing import Any

from cmrecon.chain.definition import Chain, with_step_params
from cmrecon.chain.registry import get_step
from cmrecon.errors import ChainError
from cmrecon.params import params_to_strings, parse_params

#: python-ismrmrd-server's keys that name the processing module (here: the chain);
#: a non-empty ``customconfig`` wins over ``config``, as there
CHAIN_KEYS = ("customconfig", "config")
#: python-ismrmrd-server options (matched without regard to case) that mean nothing to a raw-data chain
IGNORED_KEYS = frozenset({"sendoriginal"})
#: what a parameter JSON looks like, for error messages
LAYOUT = '{"parameters": {"<step>.<param>": value, ...}}'


@dataclass(frozen=True)
class ParameterSet:
    """One parameter JSON from a client.

    ``values``: step parameters as sent (id or bare name → JSON value), in the order sent;
    ``chain``: the chain named by ``customconfig``/``config``, if any; ``ignored``: the
    python-ismrmrd-server keys recognised and not used.
    """

    values: dict[str, Any]
    chain: str | None = None
    ignored: tuple[str, ...] = ()


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def read_parameter_text(text: str) -> ParameterSet | None:
    """The parameter set in a client's TEXT, or None when the text is not one.

    A TEXT is a parameter set when it is a JSON object with a ``parameters`` object. Text that
    does not start with ``{`` and JSON without ``parameters`` are not (they are logged, as any
    client text).

    Raises
    ------
    ChainError
        The text starts with ``{`` but is not JSON; ``parameters`` is not an object (a list is
        what ``cmrecon chains ui-json`` prints, the description rather than the values); a
        ``config``/``customconfig`` that is not text.
    """
    if not text.lstrip().startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ChainError(f"client TEXT starts with '{{' but is not JSON ({str(exc)[:120]}); a "
                         f"parameter JSON reads {LAYOUT}") from None
    if not isinstance(doc, dict) or "parameters" not in doc:
        return None
    params = doc["parameters"]
    if not isinstance(params, dict):
        hint = (" (a list of entries is the UI description that 'cmrecon chains ui-json' prints, "
                "not values)" if isinstance(params, list) else "")
        raise ChainError(f"parameter JSON: 'parameters' must be an object of id: value, got "
                         f"{_json_kind(params)}{hint}; expected {LAYOUT}")
    named: dict[str, str] = {}
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in params.items():
        if key in CHAIN_KEYS:
            if not isinstance(value, str):
                raise ChainError(f"parameter JSON: '{key}' names a chain and must be text, got "
                                 f"{_json_kind(value)} {json.dumps(value)[:80]}")
            if value.strip():
                named[key] = value.strip()
        elif key.lower() in IGNORED_KEYS:
            ignored.append(key)
        else:
            values[key] = value
    chain = next((named[k] for k in CHAIN_KEYS if k in named), None)
    return ParameterSet(values, chain, tuple(ignored))


def names_other_chain(name: str | None, chain: Chain) -> bool:
    """Whether ``name`` (a ``config`` value: ``psir_moco``, ``psir_moco.xml``) names a chain other than ``chain``."""
    if not name:
        return False
    stem, suffix = os.path.splitext(name.strip())
    return (stem if suffix in (".yaml", ".yml", ".xml") else name.strip()) != chain.name


def parameter_ids(chain: Chain) -> dict[str, tuple[str, str]]:
    """``{"<step>.<param>": (step, param)}`` for every parameter of every step, in chain order.

    A step that appears twice has one set of ids (a value sent for it is set on both, as
    :func:`cmrecon.chain.definition.with_step_params` does).
    """
    ids: dict[str, tuple[str, str]] = {}
    for step in chain.steps:
        for f in dataclasses.fields(step.params):
            ids.setdefault(f"{step.name}.{f.name}", (step.name, f.name))
    return ids


def _target(chain: Chain, key: str, ids: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """``(step, param)`` that ``key`` (an id or a bare name) sets; ChainError naming what it could be."""
    if key in ids:
        return ids[key]
    steps = list(dict.fromkeys(s.name for s in chain.steps))
    if "." in key:
        step, param = key.split(".", 1)
        if step in steps:
            known = [f"{step}.{p}" for s, p in ids.values() if s == step]
            raise _unknown(key, f"step '{step}' has no parameter '{param}'", known)
        raise _unknown(key, f"chain '{chain.name}' has no step '{step}' (its steps: {', '.join(steps)})",
                       list(ids))
    candidates = [i for i, (_, p) in ids.items() if p == key]
    if len(candidates) == 1:
        return ids[candidates[0]]
    if candidates:
        raise ChainError(f"parameter '{key}' is ambiguous: steps {', '.join(ids[c][0] for c in candidates)} "
                         f"all have it; send one of {', '.join(candidates)}")
    raise _unknown(key, f"no step of the chain ({', '.join(steps)}) has a parameter '{key}'", list(ids))


def _unknown(key: str, why: str, valid: list[str]) -> ChainError:
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ChainError(f"unknown parameter '{key}': {why}{hint}; valid names: {', '.join(valid) or 'none'}")


def apply_parameters(chain: Chain, values: dict[str, Any]) -> Chain:
    """``chain`` with ``values`` (id or unambiguous bare name → value) set on its steps.

    Each value is converted and checked by its step's parameter dataclass, as a chain file's
    would be (``"0.005"`` and ``0.005`` are the same float, ``"False"`` a boolean).

    Raises
    ------
    ChainError
        Every key that names no parameter of the chain (with the valid names), is ambiguous
        (with its candidates) or sets a parameter another key sets too, and every value its
        parameter refuses: all in one message.
    """
    ids = parameter_ids(chain)
    problems: list[str] = []
    per_step: dict[str, dict[str, Any]] = {}
    sent_as: dict[tuple[str, str], str] = {}
    for key, value in values.items():
        try:
            step, param = _target(chain, key, ids)
        except ChainError as exc:
            problems.append(str(exc))
            continue
        if (step, param) in sent_as:
            problems.append(f"'{key}' and '{sent_as[step, param]}' both set {step}.{param}")
            continue
        sent_as[step, param] = key
        try:
            parsed = parse_params(get_step(step).params_type, {param: value}, where=f"step '{step}'")
        except ChainError as exc:
            problems.append(f"'{key}': {exc}")
            continue
        per_step.setdefault(step, {})[param] = getattr(parsed, param)
    if problems:
        raise ChainError(f"parameter JSON for chain '{chain.name}': {'; '.join(problems)}")
    for step, params in per_step.items():
        try:
            chain = with_step_params(chain, step, **params)
        except (TypeError, ValueError) as exc:   # a dataclass that checks its fields together
            raise ChainError(f"parameter JSON for chain '{chain.name}': step '{step}': {exc}") from exc
    return chain


def _ui_type(tp: Any, choices: Any) -> str:
    if choices is not None:
        return "choice"
    return {bool: "boolean", int: "int", float: "double", str: "string"}.get(tp, "string")


def _ui_entry(step: str, f: dataclasses.Field, tp: Any, value: Any, text: str) -> dict[str, Any]:
    """One OpenRecon-style entry; ``text`` is the value as a chain's XML carries it."""
    choices = f.metadata.get("choices")
    kind = _ui_type(tp, choices)
    # choices, text and what only text can carry (tuples, None) go as the XML property string
    default = value if kind in ("boolean", "int", "double") else text
    entry: dict[str, Any] = {"id": f"{step}.{f.name}",
                             "label": {"en": f"{f.name.replace('_', ' ')} ({step})"},
                             "type": kind, "default": default}
    if kind == "choice":
        entry["values"] = [{"id": str(c), "name": {"en": str(c)}} for c in choices]
    for bound in ("minimum", "maximum"):   # where a step declares them in its field metadata
        if bound in f.metadata:
            entry[bound] = f.metadata[bound]
    doc = f.metadata.get("doc", "")
    if doc:
        entry["information"] = {"en": doc}
    return entry


def ui_json(chain: Chain, version: str | None = None) -> dict[str, Any]:
    """The chain's parameters in the OpenRecon UI-parameter layout.

    ``general`` names the chain; ``parameters`` holds a ``config`` choice (the chain's name, as
    python-ismrmrd-server modules are chosen) and one entry per step parameter: ``id``
    (``<step>.<param>``), ``label``, ``type`` (``boolean``, ``int``, ``double``, ``choice`` with
    ``values``, or ``string`` for text and anything only text can carry), ``default`` (the
    chain's own value) and ``information`` (the field's doc). Sending every ``default`` back as
    a parameter JSON yields the same chain.
    """
    from cmrecon import __version__
    entries: list[dict[str, Any]] = [{
        "id": "config", "label": {"en": "chain"}, "type": "choice",
        "values": [{"id": chain.name, "name": {"en": chain.name}}], "default": chain.name,
        "information": {"en": "the cmrecon chain to run (python-ismrmrd-server's config)"}}]
    seen: set[str] = set()
    for step in chain.steps:
        if step.name in seen:
            continue
        seen.add(step.name)
        hints = typing.get_type_hints(type(step.params))
        texts = params_to_strings(step.params)
        for f in dataclasses.fields(step.params):
            entries.append(_ui_entry(step.name, f, hints[f.name], getattr(step.params, f.name), texts[f.name]))
    general = {"id": chain.name, "name": {"en": chain.name}, "version": version or __version__,
               "vendor": "cmrecon",
               "information": {"en": " ".join(chain.description.split()) or chain.name}}
    return {"general": general, "parameters": entries}


def default_parameters(chain: Chain) -> dict[str, Any]:
    """``{"version": ..., "parameters": {id: default}}``: the parameter JSON that changes nothing."""
    ui = ui_json(chain)
    return {"version": ui["general"]["version"],
            "parameters": {e["id"]: e["default"] for e in ui["parameters"]}}
