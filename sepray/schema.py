"""Validation shared by run configs, model configs and sweep specs: dict -> frozen dataclass, type checks,
dotted keys and ``--set key=value`` overrides. One-line :class:`ConfigError` messages name the file and the
dotted key. Imports nothing of sepray but :mod:`sepray.errors`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import yaml

from sepray.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the file and key."""


def load_yaml(text: str | bytes, label: str, error: type = ConfigError) -> Any:
    """Parse YAML ``text`` (or a file's bytes, which must be UTF-8); malformed YAML is an ``error`` (default
    :class:`ConfigError`) on one line: ``LABEL: line L, column C: what is wrong`` (and where the construct it
    breaks started)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = text[: exc.start].count(b"\n") + 1
            raise error(
                f"{label}: not UTF-8 text (byte 0x{text[exc.start]:02x} on line {line}); save it as UTF-8"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{label}: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parser error as ``line L, column C: invalid YAML: problem (context ...)``, one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    if mark is None:
        return f"invalid YAML ({problem})"
    where = f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {problem}"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and (start.line, start.column) != (mark.line, mark.column):
        where += (
            f" ({' '.join(context.split())} that starts at line {start.line + 1}, column {start.column + 1})"
        )
    elif context:
        where += f" ({' '.join(context.split())})"
    return where


def parse_override(item: str, example: str = "train.lr=1e-3") -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", value)`` with the value parsed as YAML (a plain string if that fails)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. {example}")
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def set_dotted(
    tree: dict[str, Any], key: str, value: Any, where: str | None = None, error: type = None
) -> None:
    """``tree["a"]["b"] = value`` for ``key="a.b"``, creating sections; a non-section on the way is an
    ``error`` (default :class:`ConfigError`) naming ``where`` (default: the key)."""
    error = error or ConfigError
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise error(f"{where or key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def build_dataclass(cls, values: dict[str, Any], where: str):
    """``cls(**values)`` with type checks and one-line errors naming ``where.key``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown key; expected one of {sorted(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build_dataclass(hint, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = coerce(value, hint, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint (int/float/bool/str/tuple/Optional); int -> float is ok."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append((_shape_matches(value, arg), str(exc)))
        # report the error of the alternative shaped like the value (a list's items, a mapping's keys)
        errors.sort(key=lambda e: not e[0])
        raise ConfigError(errors[0][1] if errors else f"{where}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        if _holds_dataclass(inner):  # name the item: data.path[1].weight
            return tuple(coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(coerce(v, inner, where) for v in value)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):  # .nan / .inf in YAML: never a meaningful setting
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _shape_matches(value: Any, hint: Any) -> bool:
    """True when ``value`` has the shape of ``hint``: a list for a tuple, a mapping for a dataclass."""
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (list, tuple))
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return False


def _holds_dataclass(hint: Any) -> bool:
    if dataclasses.is_dataclass(hint):
        return True
    return any(dataclasses.is_dataclass(a) for a in typing.get_args(hint))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def plain(value: Any) -> Any:
    """Tuples -> lists recursively, so configs serialize to JSON/YAML and compare equal after a round trip."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
