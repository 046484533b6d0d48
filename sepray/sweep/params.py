"""The ``search.params`` section of a sweep spec: each searched config key as a :class:`Param`, parsed and checked.

A parameter is a dotted ``data.`` / ``model.`` / ``train.`` key with one of the kinds in :data:`KINDS` and an
optional ``when:`` condition on other keys. :func:`parse_params` checks every key and value against the config
dataclasses (and, for ``model.`` keys, against each model family the parameter can be active under), so a
typo fails when the spec is loaded, not in a trial.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from sepray.config import DataConfig, TrainConfig
from sepray.schema import coerce
from sepray.sweep.sections import SpecError

SECTIONS = ("data", "model", "train")
KINDS = ("choice", "uniform", "loguniform", "int")


# ----------------------------------------------------------------------------------------------------------
# a searched parameter


@dataclass(frozen=True)
class Param:
    """One searched config key. ``when``: ((dotted key, allowed values), ...), all must hold."""

    key: str
    kind: str  # choice | uniform | loguniform | int
    values: tuple = ()  # choice
    low: float | int | None = None  # uniform / loguniform / int (inclusive)
    high: float | int | None = None
    step: float | int | None = None  # quantization (uniform / int)
    log: bool = False  # int only: sample on a log scale
    when: tuple[tuple[str, tuple], ...] = ()

    def active(self, lookup) -> bool:
        """Whether the condition holds; ``lookup(key)`` returns the current value of a dotted key."""
        return all(_matches(lookup(key), allowed) for key, allowed in self.when)

    def suggest(self, trial) -> Any:
        """Sample with an Optuna-style trial (suggest_categorical / suggest_float / suggest_int)."""
        if self.kind == "choice":
            if all(_scalar(v) for v in self.values):
                return trial.suggest_categorical(self.key, list(self.values))
            labels = [json.dumps(v) for v in self.values]  # Optuna categoricals must be scalars
            return json.loads(trial.suggest_categorical(self.key, labels))
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            self.key, float(self.low), float(self.high), step=self.step, log=self.kind == "loguniform"
        )

    def grid_values(self) -> list:
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.kind == "uniform" and self.step:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9))
            return [self.low + i * self.step for i in range(n + 1)]
        raise ValueError(f"{self.key}: a {self.kind} range has no grid; use choice or an int range")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "choice":
            out["values"] = list(self.values)
        else:
            out.update(low=self.low, high=self.high)
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        if self.when:
            out["when"] = {k: list(v) if len(v) > 1 else v[0] for k, v in self.when}
        return out


# ----------------------------------------------------------------------------------------------------------
# parsing and checking


def parse_params(params_raw: dict[str, Any], fixed, families, label: str) -> tuple[Param, ...]:
    from sepray.models import REGISTRY

    params: list[Param] = []
    seen: dict[str, Param] = {}
    for key, body in params_raw.items():
        where = f"{label}: search.params.{key}"
        if not isinstance(key, str):
            raise SpecError(f"{where}: parameter names are dotted config keys like model.levels")
        if not isinstance(body, dict):
            raise SpecError(
                f"{where}: expected a mapping such as {{choice: [a, b]}}, {{uniform: [lo, hi]}}, "
                f"{{loguniform: [lo, hi]}} or {{int: [lo, hi]}}, got {body!r}"
            )
        kinds = [k for k in KINDS if k in body]
        unknown = [k for k in body if k not in (*KINDS, "step", "log", "when")]
        if unknown:
            raise SpecError(
                f"{where}.{unknown[0]}: unknown key; expected one of {[*KINDS, 'step', 'log', 'when']}"
            )
        if len(kinds) != 1:
            raise SpecError(f"{where}: give exactly one of {list(KINDS)}, got {kinds or 'none'}")
        kind = kinds[0]
        value = body[kind]
        when = _parse_when(body.get("when"), f"{where}.when", seen, fixed, families)
        if kind == "choice":
            if not isinstance(value, list):
                raise SpecError(f"{where}.choice: expected a list of values, got {value!r}")
            if not value:
                raise SpecError(f"{where}.choice: empty choice list")
            if "step" in body or "log" in body:
                raise SpecError(f"{where}: step / log apply to ranges, not to choice")
            param = Param(key, kind, values=tuple(freeze_value(v) for v in value), when=when)
        else:
            if not isinstance(value, list) or len(value) != 2:
                raise SpecError(f"{where}.{kind}: expected [low, high], got {value!r}")
            number = int if kind == "int" else float
            low, high = (coerce(v, number, f"{where}.{kind}") for v in value)
            if not low < high:
                raise SpecError(f"{where}.{kind}: need low < high, got [{low}, {high}]")
            if kind == "loguniform" and low <= 0:
                raise SpecError(f"{where}.loguniform: low must be > 0, got {low}")
            step = body.get("step")
            if step is not None:
                step = coerce(step, number, f"{where}.step")
                if step <= 0 or kind == "loguniform":
                    raise SpecError(f"{where}.step: needs a positive step on a uniform or int range")
            log = coerce(body.get("log", False), bool, f"{where}.log")
            if log and kind != "int":
                raise SpecError(f"{where}.log: only for int ranges (use loguniform for floats)")
            if log and low < 1:
                raise SpecError(f"{where}.log: an int log range needs low >= 1")
            if log and step not in (None, 1):
                raise SpecError(f"{where}: an int log range cannot have a step")
            param = Param(key, kind, low=low, high=high, step=step, log=log, when=when)
        _check_param_key(param, where, fixed, families, seen, REGISTRY)
        params.append(param)
        seen[key] = param
    return tuple(params)


def _parse_when(raw, where: str, seen: dict[str, Param], fixed, families) -> tuple[tuple[str, tuple], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise SpecError(f"{where}: expected a mapping of dotted key -> value or list of values")
    out = []
    for key, allowed in raw.items():
        if not isinstance(key, str) or key.split(".")[0] not in SECTIONS:
            raise SpecError(f"{where}.{key}: conditions refer to data./model./train. keys")
        if key not in seen:
            _field_hint_any(key, fixed, families, f"{where}.{key}")  # must be a real config key
        values = (
            tuple(freeze_value(v) for v in allowed) if isinstance(allowed, list) else (freeze_value(allowed),)
        )
        if not values:
            raise SpecError(f"{where}.{key}: empty list of allowed values")
        out.append((key, values))
    return tuple(out)


def _candidate_families(param_when, fixed, families, seen) -> list[str]:
    """Model families under which a parameter can be active."""
    from sepray.models import REGISTRY

    if "model.name" in seen:
        names = [str(v) for v in seen["model.name"].values]
    else:
        names = [str(fixed["model"].get("name"))]
    names = [n for n in names if n in REGISTRY]
    for key, allowed in param_when:
        if key == "model.name":
            names = [n for n in names if n in allowed]
        elif key in seen and key.startswith("model."):
            # active only where the parameter it depends on can be active
            names = [n for n in names if n in _candidate_families(seen[key].when, fixed, families, seen)]
        elif key.startswith("model."):
            names = [n for n in names if model_hint(n, key.partition(".")[2]) is not None]
    return names


def _check_param_key(param: Param, where: str, fixed, families, seen, registry) -> None:
    key = param.key
    section, _, rest = key.partition(".")
    if section not in SECTIONS or not rest:
        raise SpecError(f"{where}: parameters are dotted config keys starting with data., model. or train.")
    if key in seen:
        raise SpecError(f"{where}: listed twice")
    if key == "model.name":
        if param.kind != "choice":
            raise SpecError(f"{where}: the model family is searched with choice")
        bad = [v for v in param.values if v not in registry]
        if bad:
            raise SpecError(
                f"{where}.choice: unknown model {bad[0]!r}; expected names from {sorted(registry)}"
            )
        return
    if key in ("train.epochs", "train.steps_per_epoch", "train.max_seconds"):
        raise SpecError(
            f"{where}: the per-trial budget is fixed (set budget.epochs / steps_per_epoch / trial_seconds)"
        )
    if section == "model":
        fams = _candidate_families(param.when, fixed, families, seen)
        if not fams:
            raise SpecError(f"{where}: its when: condition excludes every model family of this sweep")
        for fam in fams:
            hint = model_hint(fam, rest)
            if hint is None:
                fields = sorted(f.name for f in dataclasses.fields(registry[fam][0]))
                extra = " (restrict it with when: {model.name: ...})" if len(fams) > 1 else ""
                raise SpecError(f"{where}: {fam} has no config key {rest!r}{extra}; its keys: {fields}")
            _check_values(param, hint, where)
        return
    hint = _section_hint(section, rest)
    if hint is None:
        raise SpecError(f"{where}: {section} has no key {rest!r}; keys: {_section_keys(section)}")
    _check_values(param, hint, where)


def _check_values(param: Param, hint, where: str) -> None:
    base = _strip_optional(hint)
    if param.kind == "choice":
        for value in param.values:
            coerce(thaw_value(value), hint, f"{where}.choice")
        return
    if base is int and param.kind != "int":
        raise SpecError(f"{where}: the key holds integers; use int: [low, high]")
    if base not in (int, float):
        raise SpecError(f"{where}: the key holds {getattr(base, '__name__', base)} values; use choice")


def _strip_optional(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def model_hint(family: str, name: str):
    """The type hint of a model family's config key ``name``; None when the family has no such key."""
    from sepray.models import REGISTRY

    cls = REGISTRY[family][0]
    hints = typing.get_type_hints(cls)
    return hints.get(name) if name in {f.name for f in dataclasses.fields(cls)} else None


def _section_hint(section: str, rest: str):
    cls = {"data": DataConfig, "train": TrainConfig}[section]
    parts = rest.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            return None
        hint = typing.get_type_hints(cls)[part]
        if i == len(parts) - 1:
            return None if dataclasses.is_dataclass(hint) else hint
        cls = hint
    return None


def _section_keys(section: str) -> list[str]:
    from sepray.schema import flatten

    cls = {"data": DataConfig, "train": TrainConfig}[section]
    return sorted(flatten(dataclasses.asdict(cls())))


def _field_hint_any(key: str, fixed, families, where: str):
    from sepray.models import REGISTRY

    section, _, rest = key.partition(".")
    if section == "model":
        if rest == "name":
            return str
        names = {str(fixed["model"].get("name")), *families}
        for fam in names:
            if fam in REGISTRY and model_hint(fam, rest) is not None:
                return model_hint(fam, rest)
        raise SpecError(f"{where}: no model family of this sweep has a config key {rest!r}")
    hint = _section_hint(section, rest)
    if hint is None:
        raise SpecError(f"{where}: {section} has no key {rest!r}")
    return hint


def freeze_value(value: Any) -> Any:
    """A YAML value made hashable (lists -> tuples); mappings are not parameter values."""
    if isinstance(value, list):
        return tuple(freeze_value(v) for v in value)
    if isinstance(value, dict):
        raise SpecError(f"mappings are not valid parameter values: {value!r}")
    return value


def thaw_value(value: Any) -> Any:
    """The inverse of :func:`freeze_value` (tuples -> lists)."""
    return [thaw_value(v) for v in value] if isinstance(value, tuple) else value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _matches(value: Any, allowed: tuple) -> bool:
    return freeze_value(value) in allowed if isinstance(value, list) else value in allowed
