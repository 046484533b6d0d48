"""The search space of a sweep spec: define-by-run sampling, grid enumeration and each trial's raw config.

:class:`SearchSpace` walks the parameters in the order the spec lists them and samples a parameter only when
its ``when:`` condition holds (looked up with :func:`config_value`), so Optuna sees the conditional space as it
is. :func:`grid_points` enumerates the same space for grid search; :func:`random_samples` draws from it with
Optuna's RandomSampler (spec validation). No Ray import.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from sepray.config import DataConfig, TrainConfig
from sepray.sweep.params import Param, model_hint, thaw_value

GRID_KEY = "grid_point"  # the trial config key holding a grid point (grid search only)


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
        hint = model_hint(name, rest) if name else None
        if hint is None:
            return None
        from sepray.models import REGISTRY

        default = {f.name: f for f in dataclasses.fields(REGISTRY[name][0])}[rest].default
        return thaw_value(default) if isinstance(default, tuple) else default
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


def random_samples(space: SearchSpace, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` configurations drawn by Optuna's RandomSampler (seeded), conditions respected."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line per validation
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return [space.sample(study.ask()) for _ in range(count)]
    finally:
        optuna.logging.set_verbosity(verbosity)


def grid_points(params: tuple[Param, ...], fixed, families) -> list[dict[str, Any]]:
    """Every combination of the active parameters (conditions respected, duplicates removed)."""
    points: list[dict[str, Any]] = [{}]
    for p in params:
        nxt = []
        for point in points:
            if p.active(lambda k, point=point: config_value(k, point, fixed, families)):
                nxt.extend({**point, p.key: thaw_value(v)} for v in p.grid_values())
            else:
                nxt.append(point)
        points = nxt
    unique: dict[str, dict[str, Any]] = {}
    for point in points:
        unique.setdefault(json.dumps(point, sort_keys=True), point)
    return list(unique.values())


def trial_raw_config(
    fixed: dict[str, Any],
    families: dict[str, dict[str, Any]],
    sampled: dict[str, Any],
    family_threads: dict[str, int | None] | None = None,
) -> dict:
    """The raw {data, model, train} config of one trial: fixed sections + family keys (and the family's torch
    threads, when its resources differ) + sampled values."""
    raw = copy.deepcopy(fixed)
    name = sampled.get("model.name", raw["model"].get("name"))
    raw["model"]["name"] = name
    raw["model"].update(copy.deepcopy(families.get(name, {})))
    if family_threads and name in family_threads:
        raw["train"]["threads"] = family_threads[name]
    for key, value in sampled.items():
        section, _, rest = key.partition(".")
        node = raw[section]
        parts = rest.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = thaw_value(value)
    return raw
