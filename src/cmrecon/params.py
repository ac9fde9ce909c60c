"""Typed parameters: frozen dataclasses parsed from XML strings or YAML values.

Each field documents itself through ``field(metadata={"doc": ..., "choices": (...)})``.
Strings from XML and values from YAML are parsed once, where a chain (or a training
configuration) is built; unknown keys and bad values are :class:`ChainError`. A field whose
type is itself such a dataclass is a section, parsed from a mapping (a training config's
``optim:``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from cmrecon.errors import ChainError

__all__ = ["parse_params", "params_to_strings", "describe_params", "type_name"]


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "tuple[" + ", ".join(type_name(a) for a in typing.get_args(tp)) + "]"
    if origin is typing.Union:
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):  # a nested section; empty (None) = its defaults
        if not isinstance(value, (dict, type(None))):
            raise ChainError(f"{where} expects a mapping, got {value!r}")
        return parse_params(tp, value or {}, where)
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in {"", "none", "null"})):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ChainError as exc:
                errors.append(str(exc))
        raise ChainError("; ".join(errors))
    if origin is tuple:
        args = typing.get_args(tp)
        items = value.replace("x", ",").split(",") if isinstance(value, str) else list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], where) for v in items)
        if len(items) != len(args):
            raise ChainError(f"{where} expects {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, where) for v, a in zip(items, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ChainError(f"{where} expects true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ChainError(f"{where} expects a number, got {value!r}")
        try:
            number = tp(value.strip()) if isinstance(value, str) else tp(value)
        except (TypeError, ValueError):
            raise ChainError(f"{where} expects {tp.__name__}, got {value!r}") from None
        if tp is int and not isinstance(value, str) and number != value:
            raise ChainError(f"{where} expects an integer, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ChainError(f"{where} expects text, got {value!r}")
        return str(value)
    raise ChainError(f"{where}: unsupported parameter type {tp!r}")


def parse_params(params_type: type, raw: dict[str, Any], where: str = "step") -> Any:
    """Validate and convert raw parameter values into ``params_type``.

    Raises
    ------
    ChainError
        Unknown key (listing the known ones), wrong type, or a value outside its ``choices``.
    """
    fields = {f.name: f for f in dataclasses.fields(params_type)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ChainError(f"{where}: unknown parameter(s) {', '.join(unknown)}; known: {known}")
    hints = typing.get_type_hints(params_type)
    values = {}
    for key, value in raw.items():
        f = fields[key]
        what = "section" if dataclasses.is_dataclass(hints[key]) else "parameter"
        converted = _convert(value, hints[key], f"{where} {what} '{key}'")
        choices = f.metadata.get("choices")
        if choices is not None and converted not in choices:
            raise ChainError(f"{where} parameter '{key}' = {converted!r} is not one of "
                             f"{', '.join(map(str, choices))}")
        values[key] = converted
    try:
        return params_type(**values)
    except (TypeError, ValueError) as exc:
        raise ChainError(f"{where}: {exc}") from exc


def params_to_strings(params: Any) -> dict[str, str]:
    """Render a parameter dataclass as XML property strings (inverse of :func:`parse_params`)."""
    out = {}
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, bool):
            out[f.name] = "true" if v else "false"
        elif isinstance(v, tuple):
            out[f.name] = ",".join(map(str, v))
        elif v is None:
            out[f.name] = "none"
        else:
            out[f.name] = str(v)
    return out


def describe_params(params_type: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, doc)`` for every field of ``params_type`` (``choices`` appended)."""
    hints = typing.get_type_hints(params_type)
    out = []
    for f in dataclasses.fields(params_type):
        doc = f.metadata.get("doc", "")
        if "choices" in f.metadata:
            doc += f" (one of: {', '.join(map(str, f.metadata['choices']))})"
        out.append((f.name, type_name(hints[f.name]), f.default, doc))
    return out
