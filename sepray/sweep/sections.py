"""The sections of a sweep spec as frozen dataclasses (search, scheduler, resources, budget), the top-level
keys, and :class:`SpecError`. The lowest of the sweep spec modules: imports only the validation layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
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


AUTO = "auto"  # resources.gpu: a GPU share per model family where the cluster has GPUs, else 0
# The GPU share a trial of each family asks for under ``gpu: auto`` on a cluster with GPUs. The dilated stacks
# (WaveNet, Structure A, UMT) keep every layer at the full sample rate: the paper-size WaveNet's training step
# on 8 x 1 s crops holds ~12 GB of activations (README, "Measured"), half of a 24 GB A10G (cluster.yaml's
# g5.xlarge), and it is compute-bound: a whole GPU each. A Wave-U-Net halves its time axis at every level (the
# paper-size one has 10 M parameters but a fraction of the WaveNet's activations): half a GPU, two trials per
# GPU. The spectrogram models (spec_unet, stft_mask: 0.06-0.5 M parameters, a few MB of activations per crop)
# cannot keep a GPU busy alone: a quarter, four trials per GPU, which with ``cpu: 1`` fills a g5.xlarge
# (4 vCPUs, 1 GPU) exactly.
AUTO_GPU_SHARE = {
    "wavenet": 1.0,
    "structure_a": 1.0,
    "umt": 1.0,
    "waveunet": 0.5,
    "spec_unet": 0.25,
    "stft_mask": 0.25,
}
AUTO_GPU_OTHER = 1.0  # a family missing above (a new one): a whole GPU, the safe choice


def auto_gpu_share(family: str | None) -> float:
    return AUTO_GPU_SHARE.get(family or "", AUTO_GPU_OTHER)


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0  # per trial; fractions allowed
    # GPUs per trial (fractions share one), or "auto": the family's share (AUTO_GPU_SHARE) on a cluster that
    # has or can start GPU nodes, else 0; resolved when the sweep starts (sepray.sweep.raytune.cluster)
    gpu: float | str = AUTO
    memory_gb: float = 0.0  # per trial, reserved in Ray's scheduler (0: no reservation)
    # model family -> what its trials ask instead (the keys above it sets; the others as above), e.g.
    # {"wavenet": Resources(cpu=1, gpu=1)}; built by spec.py's _parse_resources
    per_family: dict[str, Resources] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.gpu, str) and self.gpu != AUTO:
            raise ValueError(f"gpu: expected a number or {AUTO}, got {self.gpu!r}")
        gpu = 1.0 if self.gpu == AUTO else self.gpu
        for name, value in (("cpu", self.cpu), ("gpu", gpu)):
            if not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite number, got {value}")
        if self.cpu < 0 or gpu < 0 or (self.cpu == 0 and self.gpu == 0):
            raise ValueError("cpu: cpu and gpu must be >= 0 and not both 0")
        if self.cpu == 0 and self.gpu == AUTO:
            raise ValueError(
                "cpu: must be > 0 with gpu: auto (a cluster without GPUs runs the trial on CPUs)"
            )
        if self.memory_gb < 0:
            raise ValueError(f"memory_gb: must be >= 0, got {self.memory_gb}")

    @property
    def auto_gpu(self) -> bool:
        """Whether this entry (or one of ``per_family``) leaves the GPU share to the cluster."""
        return self.gpu == AUTO or any(r.gpu == AUTO for r in self.per_family.values())

    def auto_families(self, families: tuple[str, ...]) -> dict[str | None, float]:
        """family -> its GPU share under ``gpu: auto``, for the families (None: no family named) whose entry
        says auto; an entry with a number (``per_family``) is not listed."""
        return {fam: auto_gpu_share(fam) for fam in families or (None,) if self.of_family(fam).gpu == AUTO}

    def resolve_auto(self, families: tuple[str, ...], use_gpu: bool) -> Resources:
        """These resources with every ``auto`` replaced by a number: each family's share when ``use_gpu`` (the
        cluster has, or its autoscaler starts, GPU nodes), else 0. Each of ``families`` gets its own entry."""
        every = (*families, *(f for f in self.per_family if f not in families))
        shares = {fam: share if use_gpu else 0.0 for fam, share in self.auto_families(every).items()}
        per_family = dict(self.per_family)
        for fam, share in shares.items():
            if fam is not None:
                per_family[fam] = replace(self.of_family(fam), gpu=share, per_family={})
        base = self.gpu
        if base == AUTO:
            base = max(shares.values(), default=AUTO_GPU_OTHER if use_gpu else 0.0)
        return replace(self, gpu=base, per_family=per_family)

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


ENSEMBLE_WEIGHTS = ("fit", "equal")  # sepray.ensemble.build's choices


@dataclass(frozen=True)
class Ensemble:
    """The ``ensemble`` section: after the test stage, an ensemble of the evaluated trials (see docs/sweeps.md)."""

    enabled: bool | str = "auto"  # auto: when top_k >= 2; true; false
    weights: str = "fit"  # fit: on the full validation songs; equal

    def __post_init__(self) -> None:
        if self.enabled not in (True, False, "auto"):
            raise ValueError(f"enabled: expected auto, true or false, got {self.enabled!r}")
        if self.weights not in ENSEMBLE_WEIGHTS:
            raise ValueError(f"weights: expected one of {list(ENSEMBLE_WEIGHTS)}, got {self.weights!r}")

    def active(self, top_k: int) -> bool:
        """Whether a sweep with this ``top_k`` builds an ensemble."""
        return self.enabled is True or (self.enabled == "auto" and top_k >= 2)


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
    "resources": "cpu, gpu (a number or auto), memory_gb per trial; per_family: the same keys for one model family",
    "budget": "epochs, steps_per_epoch, trial_seconds, sweep_seconds, pending_seconds",
    "top_k": "finished trials evaluated on the full test songs",
    "ensemble": "enabled (auto: when top_k >= 2), weights (fit | equal): an ensemble of the evaluated trials",
    "max_failures": "retries of a crashed trial (from its last checkpoint)",
    "keep_checkpoints": "checkpoints kept per trial (the best by metric)",
    "storage": "Ray results folder (local path or shared storage URI)",
    "excerpt_seconds": "length of the audio excerpt logged for finished trials",
    "smoke_test": "dotted spec keys -> values applied by --smoke-test",
}
