"""The sections of a sweep spec as frozen dataclasses (search, scheduler, resources, budget), the top-level
keys, and :class:`SpecError`. The lowest of the sweep spec modules: imports only the validation layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sepray.schema import ConfigError


class SpecError(ConfigError):
    """An invalid sweep spec; the one-line message names the file and the YAML path."""


ALGORITHMS = ("optuna", "random", "grid")


# ----------------------------------------------------------------------------------------------------------
# schema


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
    memory_gb: float = 0.0  # per trial, reserved in Ray's scheduler (0: no reservation)
    # model family -> what its trials ask instead (the keys above it sets; the others as above), e.g.
    # {"wavenet": Resources(cpu=1, gpu=1)}; built by spec.py's _parse_resources
    per_family: dict[str, Resources] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.gpu < 0 or (self.cpu == 0 and self.gpu == 0):
            raise ValueError("cpu: cpu and gpu must be >= 0 and not both 0")
        if self.memory_gb < 0:
            raise ValueError(f"memory_gb: must be >= 0, got {self.memory_gb}")

    def of_family(self, family: str | None) -> Resources:
        """What one trial of model family ``family`` asks for."""
        return self.per_family.get(family, self) if family else self


@dataclass(frozen=True)
class Budget:
    epochs: int | None = None  # per trial (ASHA's max_t); default: train.epochs
    steps_per_epoch: int | None = None  # default: train.steps_per_epoch
    trial_seconds: float | None = None  # wall-clock cap per trial (train.max_seconds)
    sweep_seconds: float | None = None  # wall-clock cap for the whole sweep (Tune's time_budget_s)
    pending_seconds: float | None = (
        600.0  # a trial waiting longer for resources fails the sweep (null: never)
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value}")
        for name in ("trial_seconds", "sweep_seconds", "pending_seconds"):
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
    "test_metric": "museval_v4 or bss_eval_v3: what the test stage computes on the full test songs",
    "target": "the source the default metric / select refer to",
    "resources": "cpu, gpu, memory_gb per trial; per_family: the same keys for one model family",
    "budget": "epochs, steps_per_epoch, trial_seconds, sweep_seconds, pending_seconds",
    "top_k": "finished trials evaluated on the full test songs",
    "max_failures": "retries of a crashed trial (from its last checkpoint)",
    "keep_checkpoints": "checkpoints kept per trial (the best by metric)",
    "storage": "Ray results folder (local path or shared storage URI)",
    "excerpt_seconds": "length of the audio excerpt logged for finished trials",
    "smoke_test": "dotted spec keys -> values applied by --smoke-test",
}
