"""Sweep specs (``sweeps/*.yaml``): schema, validation and the search space, with no Ray import.

A spec is the fixed ``data`` / ``model`` / ``train`` sections of a ``sepray train`` config plus a ``search``
space over dotted config keys, the scheduler, the metric, the per-trial budget and resources. The schema is
documented in docs/sweeps.md. Every problem is a :class:`SpecError` whose one-line message names the file and
the YAML path, e.g. ``sweeps/x.yaml: search.params.model.levels: expected an integer, got 'four'``.

The search space is a define-by-run function (:class:`SearchSpace`): it walks the parameters in the order the
spec lists them and samples a parameter only when its ``when:`` condition holds, so Optuna sees the
conditional space as it is. ``grid_points`` enumerates the same space for grid search.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sepray import SOURCES
from sepray.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    TrainConfig,
    build_dataclass,
    coerce,
    resolve,
)

SECTIONS = ("data", "model", "train")
KINDS = ("choice", "uniform", "loguniform", "int")
ALGORITHMS = ("optuna", "random", "grid")
GRID_KEY = "grid_point"  # the trial config key holding a grid point (grid search only)
VALIDATION_SAMPLES = 24  # random configurations resolved up front to catch invalid combinations


class SpecError(ConfigError):
    """An invalid sweep spec; the one-line message names the file and the YAML path."""


# ----------------------------------------------------------------------------------------------------------
# schema


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


@dataclass(frozen=True)
class Scheduler:
    type: str = "asha"  # asha | none
    grace_period: int = 1  # epochs before ASHA may stop a trial
    reduction_factor: float = 3.0  # ASHA keeps the top 1/reduction_factor at each rung

    def __post_init__(self) -> None:
        if self.type not in ("asha", "none"):
            raise ValueError(f"type: must be asha or none, got {self.type!r}")
        if self.grace_period < 1 or self.reduction_factor <= 1:
            raise ValueError("grace_period: need grace_period >= 1 and reduction_factor > 1")


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0  # per trial; fractions allowed
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.gpu < 0 or (self.cpu == 0 and self.gpu == 0):
            raise ValueError("cpu: cpu and gpu must be >= 0 and not both 0")


@dataclass(frozen=True)
class Budget:
    epochs: int | None = None  # per trial (ASHA's max_t); default: train.epochs
    steps_per_epoch: int | None = None  # default: train.steps_per_epoch
    trial_seconds: float | None = None  # wall-clock cap per trial (train.max_seconds)
    sweep_seconds: float | None = None  # wall-clock cap for the whole sweep (Tune's time_budget_s)

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value}")
        for name in ("trial_seconds", "sweep_seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}: must be > 0, got {value}")


@dataclass(frozen=True)
class Search:
    algorithm: str = "optuna"  # optuna (TPE) | random | grid
    num_samples: int | None = None  # trials (optuna / random); grid runs every combination once
    max_concurrent: int = 2
    seed: int = 0
    startup_trials: int | None = None  # TPE: random trials before the model kicks in (Optuna's default 10)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: must be one of {list(ALGORITHMS)}, got {self.algorithm!r}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"num_samples: must be >= 1, got {self.num_samples}")
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent: must be >= 1, got {self.max_concurrent}")
        if self.startup_trials is not None and self.startup_trials < 0:
            raise ValueError("startup_trials: must be >= 0")


TOP_KEYS = {
    "name": "sweep name: MLflow experiment, registered model and Ray experiment folder",
    "description": "free text",
    "data": "fixed data section (as in `sepray train` configs)",
    "model": "fixed model section, with `name`",
    "train": "fixed train section",
    "families": "fixed model keys per family, applied when model.name is searched",
    "search": "algorithm, num_samples, max_concurrent, seed, startup_trials, params",
    "scheduler": "asha (grace_period, reduction_factor) or none",
    "metric": "reported every epoch; drives ASHA and the searcher",
    "mode": "max or min, for metric",
    "select": "chooses the best of the top-k after the test evaluation (higher is better)",
    "target": "the source the default metric / select refer to",
    "resources": "cpu, gpu per trial",
    "budget": "epochs, steps_per_epoch, trial_seconds, sweep_seconds",
    "top_k": "finished trials evaluated on the full test songs",
    "max_failures": "retries of a crashed trial (from its last checkpoint)",
    "keep_checkpoints": "checkpoints kept per trial (the best by metric)",
    "storage": "Ray results folder (local path or shared storage URI)",
    "excerpt_seconds": "length of the audio excerpt logged for finished trials",
    "smoke_test": "dotted spec keys -> values applied by --smoke-test",
}


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec. ``fixed`` is the raw {data, model, train} dict with the budget applied."""

    name: str
    label: str  # the spec file, for messages
    fixed: dict[str, Any]
    families: dict[str, dict[str, Any]]
    params: tuple[Param, ...]
    search: Search
    scheduler: Scheduler
    metric: str
    mode: str
    select: str
    target: str
    resources: Resources
    budget: Budget
    top_k: int
    max_failures: int
    keep_checkpoints: int
    storage: str
    excerpt_seconds: float
    description: str = ""
    smoke_test: bool = False
    raw: dict[str, Any] = field(default_factory=dict)  # the spec after --set / --smoke-test, for logging

    @property
    def epochs(self) -> int:
        return int(self.fixed["train"]["epochs"])

    @property
    def num_samples(self) -> int:
        if self.search.algorithm == "grid":
            return len(grid_points(self))
        return int(self.search.num_samples or 10)

    def param(self, key: str) -> Param | None:
        return next((p for p in self.params if p.key == key), None)

    def space(self) -> SearchSpace:
        return SearchSpace(self.fixed, self.families, self.params)

    def describe_space(self) -> dict[str, Any]:
        """JSON-able description of the search space (logged on the parent run)."""
        return {
            "algorithm": self.search.algorithm,
            "num_samples": self.num_samples,
            "seed": self.search.seed,
            "params": {p.key: p.describe() for p in self.params},
        }

    def raw_config(self, sampled: dict[str, Any]) -> dict[str, Any]:
        return trial_raw_config(self.fixed, self.families, sampled)

    def resolve_trial(self, sampled: dict[str, Any]) -> RunConfig:
        return resolve(self.raw_config(sampled), f"{self.label}: trial {sampled}")


# ----------------------------------------------------------------------------------------------------------
# loading


DEFAULT_SMOKE = {
    "budget.epochs": 2,
    "budget.steps_per_epoch": 2,
    "budget.trial_seconds": None,
    "budget.sweep_seconds": None,
    "train.valid_crops": 6,
    "train.valid_seconds": 1.0,
    "train.batch_size": 2,
    "data.synth_songs": 6,
    "data.synth_seconds": 6.0,
    "data.valid_fraction": 0.3,  # two validation songs of the default synthetic corpus, one with singing
    "top_k": 2,
    "excerpt_seconds": 2.0,
}


def load_spec(path: str | Path, overrides=(), smoke_test: bool = False) -> SweepSpec:
    """Read, apply ``--smoke-test`` settings and ``--set key=value`` overrides, validate."""
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise SpecError(f"{label}: no such sweep spec")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{label}: invalid YAML ({str(exc).splitlines()[0]})") from None
    return parse_spec(raw, label, overrides, smoke_test)


def parse_spec(raw: Any, label: str = "spec", overrides=(), smoke_test: bool = False) -> SweepSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{label}: expected a mapping with name, data, model, train, search, ...")
    raw = copy.deepcopy(raw)
    smoke = raw.pop("smoke_test", None)
    if smoke is not None and not isinstance(smoke, dict):
        raise SpecError(f"{label}: smoke_test: expected a mapping of dotted spec keys to values")
    if smoke_test:
        if "num_samples" in (raw.get("search") or {}):
            raw["search"]["num_samples"] = min(int(raw["search"]["num_samples"]), 6)
        if "top_k" in raw:
            raw["top_k"] = min(int(raw["top_k"]), DEFAULT_SMOKE["top_k"])
        for key, value in {**DEFAULT_SMOKE, **(smoke or {})}.items():
            set_spec_key(raw, str(key), value, f"{label}: smoke_test.{key}")
        raw["name"] = f"{raw.get('name')}-smoke"
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected key=value, e.g. search.num_samples=4")
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        set_spec_key(raw, key.strip(), value, f"--set {key.strip()}")
    try:
        spec = _parse(raw, label)
    except SpecError:
        raise
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    return dataclasses.replace(spec, smoke_test=smoke_test, raw=raw)


def set_spec_key(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Set a dotted spec key; under ``search.params`` the rest of the key is the (dotted) parameter name."""
    if key.startswith("search.params."):
        params = raw.setdefault("search", {}).setdefault("params", {})
        if not isinstance(params, dict):
            raise SpecError(f"{where}: search.params is not a mapping")
        rest = key[len("search.params.") :]
        owner = next((p for p in params if rest.startswith(p + ".")), None)
        if owner is not None and isinstance(params[owner], dict):
            params[owner][rest[len(owner) + 1 :]] = value
        else:
            params[rest] = value
        return
    top = key.split(".")[0]
    if top not in TOP_KEYS:
        raise SpecError(f"{where}: unknown spec key {top!r}; expected one of {sorted(TOP_KEYS)}")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"{where}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _parse(raw: dict[str, Any], label: str) -> SweepSpec:
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise SpecError(f"{label}: {unknown[0]}: unknown key; expected one of {sorted(TOP_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise SpecError(f"{label}: name: expected a non-empty name without spaces or slashes, got {name!r}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise SpecError(f"{label}: description: expected a string")

    search_raw = raw.get("search") or {}
    if not isinstance(search_raw, dict):
        raise SpecError(f"{label}: search: expected a mapping")
    search = _build(Search, search_raw, f"{label}: search")
    if not isinstance(search.params, dict):
        raise SpecError(f"{label}: search.params: expected a mapping of dotted config keys")
    scheduler_raw = raw.get("scheduler", "asha")
    if isinstance(scheduler_raw, str):
        scheduler_raw = {"type": scheduler_raw}
    scheduler = _build(Scheduler, scheduler_raw or {"type": "none"}, f"{label}: scheduler")
    resources = _build(Resources, raw.get("resources") or {}, f"{label}: resources")
    budget = _build(Budget, raw.get("budget") or {}, f"{label}: budget")

    target = _typed(raw, "target", str, "vocals", label)
    if target not in SOURCES:
        raise SpecError(f"{label}: target: {target!r} is not a source; expected one of {list(SOURCES)}")
    metric = _typed(raw, "metric", str, f"valid_sdr_{target}", label)
    mode = _typed(raw, "mode", str, "max", label)
    if mode not in ("max", "min"):
        raise SpecError(f"{label}: mode: expected max or min, got {mode!r}")
    valid_metrics = ["valid_sdr", "valid_loss", *(f"valid_sdr_{s}" for s in SOURCES)]
    if metric not in valid_metrics:
        raise SpecError(
            f"{label}: metric: {metric!r} is not reported per epoch; expected one of {valid_metrics}"
        )
    select = _typed(raw, "select", str, f"test_sdr_{target}", label)
    select_metrics = [
        "test_sdr",
        *(f"test_sdr_{s}" for s in SOURCES),
        "valid_sdr",
        *(f"valid_sdr_{s}" for s in SOURCES),
    ]
    if select not in select_metrics:
        raise SpecError(f"{label}: select: {select!r}: expected one of {select_metrics}")
    top_k = _typed(raw, "top_k", int, 3, label)
    max_failures = _typed(raw, "max_failures", int, 2, label)
    keep = _typed(raw, "keep_checkpoints", int, 2, label)
    if top_k < 1 or max_failures < 0 or keep < 1:
        raise SpecError(f"{label}: need top_k >= 1, max_failures >= 0 and keep_checkpoints >= 1")
    storage = _typed(raw, "storage", str, "ray_results", label)
    excerpt = _typed(raw, "excerpt_seconds", float, 5.0, label)
    if excerpt <= 0:
        raise SpecError(f"{label}: excerpt_seconds: must be > 0")

    fixed = {s: copy.deepcopy(raw.get(s) or {}) for s in SECTIONS}
    for s in SECTIONS:
        if not isinstance(fixed[s], dict):
            raise SpecError(f"{label}: {s}: expected a mapping")
    train = fixed["train"]
    if budget.epochs is not None:
        train["epochs"] = budget.epochs
    if budget.steps_per_epoch is not None:
        train["steps_per_epoch"] = budget.steps_per_epoch
    if budget.trial_seconds is not None:
        train["max_seconds"] = budget.trial_seconds
    train.setdefault("epochs", TrainConfig.epochs)
    if resources.cpu >= 1 and train.get("threads") is None:
        train["threads"] = int(resources.cpu)  # one torch thread per reserved core

    families_raw = raw.get("families") or {}
    if not isinstance(families_raw, dict):
        raise SpecError(f"{label}: families: expected a mapping of model name -> fixed model keys")
    from sepray.models import REGISTRY

    for fam, values in families_raw.items():
        if fam not in REGISTRY:
            raise SpecError(f"{label}: families.{fam}: unknown model; expected one of {sorted(REGISTRY)}")
        if not isinstance(values, dict):
            raise SpecError(f"{label}: families.{fam}: expected a mapping of model keys")
        if "name" in values:
            raise SpecError(f"{label}: families.{fam}.name: the family is the key; remove name")

    params = _parse_params(search.params, fixed, families_raw, label)
    family = next((p for p in params if p.key == "model.name"), None)
    if family is not None:
        for key in fixed["model"]:
            missing = [f for f in family.values if key != "name" and _model_hint(f, key) is None]
            if missing:
                raise SpecError(
                    f"{label}: model.{key}: {missing[0]} has no such key; when model.name is searched, the "
                    f"model section holds keys every family has, family-specific ones go under families.<name>"
                )
    if search.algorithm == "grid":
        if search.num_samples is not None:
            raise SpecError(
                f"{label}: search.num_samples: grid search runs every combination once; remove it"
            )
        for p in params:
            try:
                p.grid_values()
            except ValueError as exc:
                raise SpecError(f"{label}: search.params.{exc}") from None
    spec = SweepSpec(
        name=name,
        label=label,
        fixed=fixed,
        families={k: dict(v) for k, v in families_raw.items()},
        params=params,
        search=search,
        scheduler=scheduler,
        metric=metric,
        mode=mode,
        select=select,
        target=target,
        resources=resources,
        budget=budget,
        top_k=top_k,
        max_failures=max_failures,
        keep_checkpoints=keep,
        storage=storage,
        excerpt_seconds=excerpt,
        description=description,
    )
    _check_configurations(spec)
    return spec


def _build(cls, values, where: str):
    """build_dataclass, with a field named by ``__post_init__`` ("field: ...") moved into the YAML path."""
    try:
        return build_dataclass(cls, values, where)
    except ConfigError as exc:
        msg = str(exc)
        head, _, rest = msg[len(where) + 2 :].partition(": ")
        if msg.startswith(where + ": ") and head in {f.name for f in dataclasses.fields(cls)}:
            msg = f"{where}.{head}: {rest}"
        raise SpecError(msg) from None


def _typed(raw: dict[str, Any], key: str, kind: type, default: Any, label: str) -> Any:
    if raw.get(key) is None:
        return default
    return coerce(raw[key], kind, f"{label}: {key}")


# ----------------------------------------------------------------------------------------------------------
# parameters


def _parse_params(params_raw: dict[str, Any], fixed, families, label: str) -> tuple[Param, ...]:
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
            param = Param(key, kind, values=tuple(_freeze(v) for v in value), when=when)
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
        values = tuple(_freeze(v) for v in allowed) if isinstance(allowed, list) else (_freeze(allowed),)
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
            names = [n for n in names if _model_hint(n, key.partition(".")[2]) is not None]
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
            hint = _model_hint(fam, rest)
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
            coerce(_thaw(value), hint, f"{where}.choice")
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


def _model_hint(family: str, name: str):
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
    from sepray.config import flatten

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
            if fam in REGISTRY and _model_hint(fam, rest) is not None:
                return _model_hint(fam, rest)
        raise SpecError(f"{where}: no model family of this sweep has a config key {rest!r}")
    hint = _section_hint(section, rest)
    if hint is None:
        raise SpecError(f"{where}: {section} has no key {rest!r}")
    return hint


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        raise SpecError(f"mappings are not valid parameter values: {value!r}")
    return value


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _matches(value: Any, allowed: tuple) -> bool:
    return _freeze(value) in allowed if isinstance(value, list) else value in allowed


# ----------------------------------------------------------------------------------------------------------
# the space


def config_value(key: str, sampled: dict[str, Any], fixed, families) -> Any:
    """The value a dotted key takes in a trial: sampled, else the family's fixed keys, else fixed, else default."""
    if key in sampled:
        return sampled[key]
    section, _, rest = key.partition(".")
    if section == "model":
        name = sampled.get("model.name", fixed["model"].get("name"))
        if rest == "name":
            return name
        fam = families.get(name, {})
        if rest in fam:
            return fam[rest]
        if rest in fixed["model"]:
            return fixed["model"][rest]
        hint = _model_hint(name, rest) if name else None
        if hint is None:
            return None
        from sepray.models import REGISTRY

        default = {f.name: f for f in dataclasses.fields(REGISTRY[name][0])}[rest].default
        return _thaw(default) if isinstance(default, tuple) else default
    node: Any = fixed[section]
    for part in rest.split("."):
        if not isinstance(node, dict) or part not in node:
            node = None
            break
        node = node[part]
    if node is not None:
        return node
    cls_default: Any = {"data": DataConfig, "train": TrainConfig}[section]()
    for part in rest.split("."):
        cls_default = getattr(cls_default, part, None)
    return cls_default


class SearchSpace:
    """Define-by-run search space: ``space(trial)`` samples the active parameters in spec order.

    Picklable (Ray saves the searcher with the experiment state). Works with any object that has Optuna's
    ``suggest_categorical`` / ``suggest_float`` / ``suggest_int``; returns None (the sampled values are the
    ones the trial records) so that Ray's OptunaSearch uses exactly what was suggested.
    """

    def __init__(self, fixed: dict[str, Any], families: dict[str, dict[str, Any]], params: tuple[Param, ...]):
        self.fixed = fixed
        self.families = families
        self.params = params

    def sample(self, trial) -> dict[str, Any]:
        sampled: dict[str, Any] = {}
        for p in self.params:
            if p.active(lambda k: config_value(k, sampled, self.fixed, self.families)):
                sampled[p.key] = p.suggest(trial)
        return sampled

    def __call__(self, trial) -> None:
        self.sample(trial)
        return None


class RandomTrial:
    """An Optuna-like trial that samples uniformly with a seeded RNG (validation and tests, no Optuna needed)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def suggest_categorical(self, name, choices):
        return self.rng.choice(list(choices))

    def suggest_float(self, name, low, high, step=None, log=False):
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        if step:
            return low + self.rng.randint(0, int(math.floor((high - low) / step + 1e-9))) * step
        return self.rng.uniform(low, high)

    def suggest_int(self, name, low, high, step=1, log=False):
        if log:
            return int(round(math.exp(self.rng.uniform(math.log(low), math.log(high + 1) - 1e-9) - 0.5)))
        return low + self.rng.randint(0, (high - low) // step) * step


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the active parameters (conditions respected, duplicates removed)."""
    points: list[dict[str, Any]] = [{}]
    for p in spec.params:
        nxt = []
        for point in points:
            if p.active(lambda k, point=point: config_value(k, point, spec.fixed, spec.families)):
                nxt.extend({**point, p.key: _thaw(v)} for v in p.grid_values())
            else:
                nxt.append(point)
        points = nxt
    unique: dict[str, dict[str, Any]] = {}
    for point in points:
        unique.setdefault(json.dumps(point, sort_keys=True), point)
    return list(unique.values())


def trial_raw_config(
    fixed: dict[str, Any], families: dict[str, dict[str, Any]], sampled: dict[str, Any]
) -> dict:
    """The raw {data, model, train} config of one trial: fixed sections + family keys + sampled values."""
    raw = copy.deepcopy(fixed)
    name = sampled.get("model.name", raw["model"].get("name"))
    raw["model"]["name"] = name
    raw["model"].update(copy.deepcopy(families.get(name, {})))
    for key, value in sampled.items():
        section, _, rest = key.partition(".")
        node = raw[section]
        parts = rest.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _thaw(value)
    return raw


def _check_configurations(spec: SweepSpec) -> None:
    """Resolve the fixed config of every family and a sample of trial configs (all of a small grid)."""
    family = spec.param("model.name")
    names = [str(v) for v in family.values] if family else [None]
    for name in names:
        sampled = {"model.name": name} if name else {}
        try:
            resolve(spec.raw_config(sampled), spec.label)
        except ConfigError as exc:
            msg = str(exc)
            if name:
                msg = msg.replace(spec.label + ":", f"{spec.label}: (model.name={name})", 1)
            raise SpecError(msg) from None
    if spec.search.algorithm == "grid":
        samples = grid_points(spec)[:200]
    else:
        rng = random.Random(spec.search.seed)
        space = spec.space()
        samples = [space.sample(RandomTrial(rng)) for _ in range(VALIDATION_SAMPLES)]
    for sampled in samples:
        try:
            resolve(spec.raw_config(sampled), spec.label)
        except ConfigError as exc:
            detail = str(exc).split(": ", 1)[-1]
            raise SpecError(
                f"{spec.label}: search.params: the configuration {json.dumps(sampled)} is invalid: {detail}"
            ) from None
