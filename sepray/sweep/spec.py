"""Sweep specs (``sweeps/*.yaml``): schema, loading and validation, with no Ray import.

A spec is the fixed ``data`` / ``model`` / ``train`` sections of a ``sepray train`` config plus a ``search``
space over dotted config keys, the scheduler, the metric, the per-trial budget and resources. The schema is
documented in docs/sweeps.md. Every problem is a :class:`SpecError` whose one-line message names the file and
the YAML path, e.g. ``sweeps/x.yaml: search.params.model.levels: expected an integer, got 'four'``.

Searched parameters: :mod:`sepray.sweep.params`; the search space, its grid and each trial's raw config:
:mod:`sepray.sweep.space`. ``load_spec`` / ``parse_spec`` are the entry points.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepray import names
from sepray.config import RunConfig, TrainConfig, resolve
from sepray.schema import ConfigError, build_dataclass, coerce, load_yaml, parse_override, set_dotted
from sepray.sweep.objectives import parse_objectives
from sepray.sweep.params import SECTIONS, Param, model_hint, parse_params
from sepray.sweep.sections import TOP_KEYS, Budget, Ensemble, Resources, Scheduler, Search, SpecError
from sepray.sweep.space import SearchSpace, grid_points, random_samples, trial_raw_config

VALIDATION_SAMPLES = 24  # random configurations resolved up front to catch invalid combinations


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
    test_metric: str = names.MUSEVAL_V4  # what the test stage computes (sepray.sweep.objectives)
    ensemble: Ensemble = field(default_factory=Ensemble)  # after the test stage (sepray.sweep.ensemble_stage)
    # torch threads of a family whose resources.per_family cpu differs (train.threads unset): int(cpu), or None
    family_threads: dict[str, int | None] = field(default_factory=dict)
    smoke_test: bool = False
    raw: dict[str, Any] = field(default_factory=dict)  # the spec after --set / --smoke-test, for logging

    @property
    def epochs(self) -> int:
        return int(self.fixed["train"]["epochs"])

    @property
    def num_samples(self) -> int:
        if self.search.algorithm == "grid":
            return len(grid_points(self.params, self.fixed, self.families))
        return int(self.search.num_samples or 10)

    def storage_path(self) -> str:
        """Where Ray keeps the sweep's results: a resolved local folder, or a storage URI as given."""
        return self.storage if "://" in self.storage else str(Path(self.storage).expanduser().resolve())

    def experiment_dir(self) -> Path | None:
        """The local Ray experiment folder (None for remote storage URIs)."""
        return None if "://" in self.storage else Path(self.storage_path()) / self.name

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
        return trial_raw_config(self.fixed, self.families, sampled, self.family_threads)

    def trial_families(self) -> tuple[str, ...]:
        """The model families this sweep's trials can have (searched ``model.name`` values, or the fixed one)."""
        family = self.param("model.name")
        if family is not None:
            return tuple(str(v) for v in family.values)
        name = self.fixed["model"].get("name")
        return (str(name),) if name else ()

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
    raw = load_yaml(path.read_bytes(), label, SpecError) or {}
    return parse_spec(raw, label, overrides, smoke_test)


def parse_spec(raw: Any, label: str = "spec", overrides=(), smoke_test: bool = False) -> SweepSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{label}: expected a mapping with name, data, model, train, search, ...")
    raw = copy.deepcopy(raw)
    smoke = raw.pop("smoke_test", None)
    if smoke is not None and not isinstance(smoke, dict):
        raise SpecError(f"{label}: smoke_test: expected a mapping of dotted spec keys to values")
    if smoke_test:
        if isinstance(search := raw.get("search"), dict) and search.get("num_samples") is not None:
            search["num_samples"] = min(coerce(search["num_samples"], int, f"{label}: search.num_samples"), 6)
        if "top_k" in raw:
            raw["top_k"] = min(coerce(raw["top_k"], int, f"{label}: top_k"), DEFAULT_SMOKE["top_k"])
        for key, value in {**DEFAULT_SMOKE, **(smoke or {})}.items():
            set_spec_key(raw, str(key), value, f"{label}: smoke_test.{key}")
        raw["name"] = f"{raw.get('name')}-smoke"
    for item in overrides:
        try:
            key, value = parse_override(item, example="search.num_samples=4")
        except ConfigError as exc:
            raise SpecError(str(exc)) from None
        set_spec_key(raw, key, value, f"--set {key}")
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
    set_dotted(raw, key, value, where, SpecError)


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
    resources = _parse_resources(raw.get("resources") or {}, label)
    budget = _build(Budget, raw.get("budget") or {}, f"{label}: budget")
    ensemble_raw = raw.get("ensemble", {})
    if isinstance(ensemble_raw, (bool, str)):  # `ensemble: false` / `ensemble: auto`: its `enabled` key
        ensemble_raw = {"enabled": ensemble_raw}
    ensemble = _build(Ensemble, ensemble_raw if ensemble_raw is not None else {}, f"{label}: ensemble")

    objectives = parse_objectives(raw, label)
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
    family_threads: dict[str, int | None] = {}
    if train.get("threads") is None:
        threads = int(resources.cpu) if resources.cpu >= 1 else None  # one torch thread per reserved core
        if threads is not None:
            train["threads"] = threads
        for fam, res in resources.per_family.items():
            if (int(res.cpu) if res.cpu >= 1 else None) != threads:
                family_threads[fam] = int(res.cpu) if res.cpu >= 1 else None

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

    params = parse_params(search.params, fixed, families_raw, label)
    family = next((p for p in params if p.key == "model.name"), None)
    if family is not None:
        for key in fixed["model"]:
            missing = [f for f in family.values if key != "name" and model_hint(f, key) is None]
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
        metric=objectives.metric,
        mode=objectives.mode,
        select=objectives.select,
        target=objectives.target,
        resources=resources,
        budget=budget,
        top_k=top_k,
        max_failures=max_failures,
        keep_checkpoints=keep,
        storage=storage,
        excerpt_seconds=excerpt,
        description=description,
        test_metric=objectives.test_metric,
        ensemble=ensemble,
        family_threads=family_threads,
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


def _parse_resources(raw: Any, label: str) -> Resources:
    """The ``resources`` section: per-trial cpu / gpu / memory_gb, and ``per_family``: the same keys for the
    trials of one model family (a key it does not set keeps the value above)."""
    where = f"{label}: resources"
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping")
    raw = dict(raw)
    per_family_raw = raw.pop("per_family", None) or {}
    base = _build(Resources, raw, where)
    if not isinstance(per_family_raw, dict):
        raise SpecError(f"{where}.per_family: expected a mapping of model name -> resources")
    from sepray.models import REGISTRY

    keys = [f.name for f in dataclasses.fields(Resources) if f.name != "per_family"]
    per_family = {}
    for fam, values in per_family_raw.items():
        fam_where = f"{where}.per_family.{fam}"
        if fam not in REGISTRY:
            raise SpecError(f"{fam_where}: unknown model; expected one of {sorted(REGISTRY)}")
        if not isinstance(values, dict):
            raise SpecError(f"{fam_where}: expected a mapping of {keys}")
        unknown = [k for k in values if k not in keys]
        if unknown:
            raise SpecError(f"{fam_where}.{unknown[0]}: unknown key; expected one of {keys}")
        per_family[fam] = _build(Resources, {**{k: getattr(base, k) for k in keys}, **values}, fam_where)
    return dataclasses.replace(base, per_family=per_family)


def _typed(raw: dict[str, Any], key: str, kind: type, default: Any, label: str) -> Any:
    if raw.get(key) is None:
        return default
    return coerce(raw[key], kind, f"{label}: {key}")


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
        samples = grid_points(spec.params, spec.fixed, spec.families)[:200]
    else:
        samples = random_samples(spec.space(), VALIDATION_SAMPLES, spec.search.seed)
    for sampled in samples:
        try:
            resolve(spec.raw_config(sampled), spec.label)
        except ConfigError as exc:
            detail = str(exc).split(": ", 1)[-1]
            raise SpecError(
                f"{spec.label}: search.params: the configuration {json.dumps(sampled)} is invalid: {detail}"
            ) from None
