"""Run configuration: the ``data``, ``model`` and ``train`` sections shared by ``sepray train`` and sweeps.

A config is a YAML file (or a preset name shipped in ``sepray/presets``) with three sections::

    data:  {path, layout, sample_rate, channels, ..., augment: {...}}
    model: {name: waveunet, <keys of that model's config dataclass>}
    train: {epochs, steps_per_epoch, batch_size, lr, ...}

Unknown keys, wrong types and unknown model names raise :class:`ConfigError` naming the file and key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sepray import SOURCES
from sepray.schema import ConfigError, build_dataclass, flatten, parse_override, plain, read_text, set_dotted


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (the notes' source gains and UMT pitch shift)."""

    gain_min: float = 0.7  # each source scaled by U[gain_min, gain_max], mix re-summed, targets scaled too
    gain_max: float = 1.0
    pitch_shift_prob: float = 0.0  # probability that a crop gets a pitch-shifted segment
    pitch_semitones: float = 0.5  # shift ~ U(-pitch_semitones, pitch_semitones)
    pitch_min_seconds: float = 0.25
    pitch_max_seconds: float = 0.5
    # "both" (default): the sources are shifted and re-summed, so the target is the shifted source and a
    # separator is never asked to undo the shift; "input": only the mixture (UMT's encoder augmentation)
    pitch_target: str = "both"

    def __post_init__(self) -> None:
        if not 0.0 <= self.gain_min <= self.gain_max:
            raise ValueError(f"need 0 <= gain_min <= gain_max, got {self.gain_min}, {self.gain_max}")
        if not 0.0 <= self.pitch_shift_prob <= 1.0:
            raise ValueError(f"pitch_shift_prob must be in [0, 1], got {self.pitch_shift_prob}")
        if not 0.0 < self.pitch_min_seconds <= self.pitch_max_seconds:
            raise ValueError("need 0 < pitch_min_seconds <= pitch_max_seconds")
        if self.pitch_target not in ("input", "both"):
            raise ValueError(f"pitch_target must be 'input' or 'both', got {self.pitch_target!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where songs come from and how they are prepared."""

    path: str | None = None  # dataset root; None = the built-in synthetic corpus (generated once, cached)
    layout: str = "auto"  # "auto" | "ccmixter" | "musdb"
    sample_rate: int = 16000
    channels: int = 1
    valid_fraction: float = 0.15  # of the training songs, split by song, deterministic
    test_fraction: float = 0.2  # CCMixter layout only (MUSDB has its own test/ folder)
    synth_songs: int = 16
    synth_seconds: float = 20.0
    synth_seed: int = 0
    cache_dir: str | None = None  # None = $SEPRAY_CACHE or ~/.cache/sepray
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.layout not in ("auto", "ccmixter", "musdb"):
            raise ValueError(f"layout must be auto, ccmixter or musdb, got {self.layout!r}")
        if self.sample_rate <= 0 or self.channels not in (1, 2):
            raise ValueError("sample_rate must be > 0 and channels 1 or 2")
        if not (0.0 <= self.valid_fraction < 1.0 and 0.0 <= self.test_fraction < 1.0):
            raise ValueError("valid_fraction and test_fraction must be in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """One training loop for every model."""

    epochs: int = 10
    steps_per_epoch: int = 50
    batch_size: int = 8
    segment_seconds: float = 1.0  # length of the predicted (output) segment of each training crop
    lr: float = 3e-4
    weight_decay: float = 0.0
    lr_decay: float = 1.0  # multiply lr by this after every epoch
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    loss: str = "auto"  # auto (cross-entropy for mu-law heads, MSE otherwise) | mse | l1 | sdr
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision, used on CUDA only
    multi_gpu: bool = True  # device auto/cuda with several visible GPUs: split each batch across all of them
    seed: int = 0
    valid_crops: int = 16  # fixed validation crops scored each epoch
    valid_seconds: float = 2.0
    max_seconds: float | None = None  # wall-clock budget; training stops after the epoch that passes it
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    eval_chunk_seconds: float = 10.0  # chunk length for full-song inference in evaluate / separate

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.steps_per_epoch < 1 or self.batch_size < 1:
            raise ValueError("epochs, steps_per_epoch and batch_size must be >= 1")
        if self.lr <= 0 or self.segment_seconds <= 0:
            raise ValueError("lr and segment_seconds must be > 0")
        if self.loss not in ("auto", "mse", "l1", "sdr"):
            raise ValueError(f"loss must be auto, mse, l1 or sdr, got {self.loss!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one training run."""

    data: DataConfig
    model_name: str
    model: dict[str, Any]  # resolved model config (every field of the model's dataclass)
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "model": {"name": self.model_name, **plain(self.model)},
            "train": dataclasses.asdict(self.train),
        }

    def signature(self) -> str:
        """Short stable hash of the resolved config (names trials, detects duplicates)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, e.g. {'model.levels': 6, 'data.augment.gain_min': 0.7}."""
        return flatten(self.to_dict())

    def model_config(self):
        """The model's frozen config dataclass."""
        from sepray.models import make_config

        return make_config(self.model_name, self.model)


# ----------------------------------------------------------------------------------------------------------


def preset_names() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files("sepray.presets").iterdir() if p.name.endswith(".yaml")
    )


def read_config_source(source: str | Path) -> tuple[dict[str, Any], str]:
    """YAML path or preset name -> (raw dict, label used in error messages)."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        label = str(path)
        text = read_text(path)
    else:
        name = str(source)
        if name not in preset_names():
            raise ConfigError(f"{name}: not a config file or a preset (presets: {', '.join(preset_names())})")
        label = f"preset {name}"
        text = resources.files("sepray.presets").joinpath(f"{name}.yaml").read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a mapping with data/model/train sections")
    return raw, label


def load_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML file or preset, apply ``key=value`` overrides, validate, resolve."""
    raw, label = read_config_source(source)
    raw = apply_overrides(raw, overrides, label)
    return resolve(raw, label)


def apply_overrides(raw: dict[str, Any], overrides, label: str = "--set") -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted ``key=value`` strings (YAML-parsed values) applied."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(out, key, value)
    return out


def resolve(raw: dict[str, Any], label: str = "config") -> RunConfig:
    """Validate a raw {data, model, train} dict and build the RunConfig."""
    from sepray.models import REGISTRY, make_config

    unknown = set(raw) - {"data", "model", "train"}
    if unknown:
        raise ConfigError(f"{label}: unknown section {sorted(unknown)[0]!r}; expected data, model, train")
    data = build_dataclass(DataConfig, raw.get("data") or {}, f"{label}: data")
    train = build_dataclass(TrainConfig, raw.get("train") or {}, f"{label}: train")
    model_raw = dict(raw.get("model") or {})
    name = model_raw.pop("name", None)
    if name is None:
        raise ConfigError(f"{label}: model.name is missing; expected one of {sorted(REGISTRY)}")
    if name not in REGISTRY:
        raise ConfigError(f"{label}: model.name {name!r} is unknown; expected one of {sorted(REGISTRY)}")
    model_raw.setdefault("audio_channels", data.channels)
    try:
        model_cfg = make_config(name, model_raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: model: {exc}") from None
    if model_cfg.audio_channels != data.channels:
        raise ConfigError(
            f"{label}: model.audio_channels={model_cfg.audio_channels} but data.channels={data.channels}"
        )
    bad = [s for s in model_cfg.sources if s not in SOURCES]
    if bad or not model_cfg.sources:
        raise ConfigError(f"{label}: model.sources {list(model_cfg.sources)}: expected a subset of {SOURCES}")
    return RunConfig(data=data, model_name=name, model=plain(dataclasses.asdict(model_cfg)), train=train)


def run_config_from_dict(d: dict[str, Any], label: str = "config") -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict`."""
    return resolve(d, label)
