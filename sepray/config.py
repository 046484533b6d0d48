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
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sepray import SOURCES
from sepray.schema import ConfigError, build_dataclass, flatten, load_yaml, parse_override, plain, set_dotted


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
    # remix across songs (Demucs, Open-Unmix): with this probability a crop keeps its song's first source
    # (vocals) and takes every other source from a crop of another training song, mix re-summed
    remix_prob: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.remix_prob <= 1.0:
            raise ValueError(f"remix_prob must be in [0, 1], got {self.remix_prob}")
        if not 0.0 <= self.gain_min <= self.gain_max:
            raise ValueError(f"need 0 <= gain_min <= gain_max, got {self.gain_min}, {self.gain_max}")
        if not 0.0 <= self.pitch_shift_prob <= 1.0:
            raise ValueError(f"pitch_shift_prob must be in [0, 1], got {self.pitch_shift_prob}")
        if not 0.0 < self.pitch_min_seconds <= self.pitch_max_seconds:
            raise ValueError("need 0 < pitch_min_seconds <= pitch_max_seconds")
        if self.pitch_target not in ("input", "both"):
            raise ValueError(f"pitch_target must be 'input' or 'both', got {self.pitch_target!r}")


# Dataset layouts (sepray/data/layouts.py reads them); "ikala" is another name for "mir1k" (same convention)
LAYOUTS = ("ccmixter", "musdb", "musdb-stems", "mir1k")
LAYOUT_ALIASES = {"ikala": "mir1k"}
SYNTHETIC = "synthetic"  # the corpus name and data.path entry of the built-in synthetic corpus
BUILTIN_SPLITS = ("auto", "mir1k-standard")  # else data.split names a .yaml / .yml / .json split file
SPLIT_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def _check_layout(layout: str) -> None:
    if layout != "auto" and layout not in LAYOUTS and layout not in LAYOUT_ALIASES:
        choices = ", ".join(("auto", *LAYOUTS, *LAYOUT_ALIASES))
        raise ValueError(f"layout {layout!r} is unknown; expected one of {choices}")


def _check_split(split: str) -> None:
    if split not in BUILTIN_SPLITS and not split.lower().endswith(SPLIT_FILE_SUFFIXES):
        raise ValueError(
            f"split {split!r}: expected auto, mir1k-standard or a .yaml / .json file listing train / valid / "
            "test songs"
        )


@dataclass(frozen=True)
class CorpusConfig:
    """One dataset root of ``data.path`` (several may be listed), with its own layout, split and weight."""

    path: str  # dataset root, or "synthetic" for the built-in synthetic corpus
    layout: str = "auto"  # "auto" | one of LAYOUTS | "ikala"
    split: str = "auto"  # "auto" | "mir1k-standard" | a split file (see sepray/data/splits.py)
    weight: float = 1.0  # share of training crops drawn from this corpus (normalised over the corpora)
    name: str | None = None  # how songs, data.eval_corpus and errors name it; default: see corpus_name

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path is empty")
        _check_layout(self.layout)
        _check_split(self.split)
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight must be a finite number > 0, got {self.weight}")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"name {self.name!r}: expected a non-empty name without '/'")

    @property
    def is_synthetic(self) -> bool:
        return self.path == SYNTHETIC

    @property
    def corpus_name(self) -> str:
        """``name``, else "synthetic" for the synthetic corpus, else the root folder's name."""
        if self.name:
            return self.name
        if self.is_synthetic:
            return SYNTHETIC
        return Path(self.path.rstrip("/")).name or self.path


@dataclass(frozen=True)
class DataConfig:
    """Where songs come from and how they are prepared."""

    # dataset root; None = the built-in synthetic corpus (generated once, cached); or a list of roots, each a
    # path (or "synthetic") or a mapping {path, layout, split, weight, name} (CorpusConfig)
    path: str | tuple[str | CorpusConfig, ...] | None = None
    layout: str = "auto"  # "auto" | "ccmixter" | "musdb" | "musdb-stems" | "mir1k" | "ikala" (one root only)
    split: str = "auto"  # "auto" | "mir1k-standard" | a split file (one root only; per root: its split key)
    eval_corpus: str | None = None  # several roots: validation and test songs of this corpus only
    sample_rate: int = 16000
    channels: int = 1
    # full songs are separated and scored at this rate by `sepray evaluate` and a sweep's test stage (None:
    # sample_rate); a model at a lower rate separates them as `sepray separate` does (resampled to its rate
    # and back, the band above its Nyquist frequency to the accompaniment): MIR-1K papers score 16 kHz clips
    eval_sample_rate: int | None = None
    valid_fraction: float = 0.15  # of the training songs, split by song, deterministic
    test_fraction: float = 0.2  # CCMixter layout only (MUSDB has its own test/ folder)
    synth_songs: int = 16
    synth_seconds: float = 20.0
    synth_seed: int = 0
    cache_dir: str | None = None  # None = $SEPRAY_CACHE or ~/.cache/sepray
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _check_layout(self.layout)
        _check_split(self.split)
        if self.sample_rate <= 0 or self.channels not in (1, 2):
            raise ValueError("sample_rate must be > 0 and channels 1 or 2")
        if self.eval_sample_rate is not None and self.eval_sample_rate <= 0:
            raise ValueError(
                f"eval_sample_rate must be > 0 (or null: sample_rate), got {self.eval_sample_rate}"
            )
        if not (0.0 <= self.valid_fraction < 1.0 and 0.0 <= self.test_fraction < 1.0):
            raise ValueError("valid_fraction and test_fraction must be in [0, 1)")
        if self.path is None:
            needs = [f"layout {self.layout}"] if self.layout not in ("auto", "ccmixter") else []
            needs += ["split mir1k-standard"] if self.split == "mir1k-standard" else []
            if needs:
                raise ValueError(
                    f"path is not set, but {' and '.join(needs)} {'need' if len(needs) > 1 else 'needs'} a dataset folder (--set data.path=FOLDER); "
                    "no path means the built-in synthetic corpus"
                )
        if isinstance(self.path, tuple):
            if not self.path:
                raise ValueError("path: the list of dataset roots is empty")
            if self.layout != "auto" or self.split != "auto":
                raise ValueError(
                    "layout and split apply to a single data.path; with a list of roots, give each root its "
                    "own (e.g. {path: ..., layout: mir1k, split: mir1k-standard})"
                )
        names = [c.corpus_name for c in self.corpora()]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"path[{i}]: a second corpus named {name!r}; give the roots distinct names")
        if self.eval_corpus is not None and self.eval_corpus not in names:
            raise ValueError(
                f"eval_corpus {self.eval_corpus!r} is not a corpus of data.path ({', '.join(names)})"
            )

    def corpora(self) -> tuple[CorpusConfig, ...]:
        """Every dataset root as a CorpusConfig: the synthetic corpus for ``path: null``, one for a path."""
        if self.path is None:
            return (CorpusConfig(SYNTHETIC, self.layout, self.split),)
        if isinstance(self.path, str):
            return (CorpusConfig(self.path, self.layout, self.split),)
        return tuple(c if isinstance(c, CorpusConfig) else CorpusConfig(c) for c in self.path)

    def describe(self) -> str:
        """One short line naming the data: a path, "synthetic", or the corpus names joined by " + "."""
        if self.path is None:
            return SYNTHETIC
        if isinstance(self.path, str):
            return self.path
        return " + ".join(c.corpus_name for c in self.corpora())


def absolute_data_paths(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw ``data`` section whose relative dataset roots and split files are absolute (against the
    working folder): a sweep's trials read them from their own working folders. Anything else is left as it is
    (``synthetic``, URIs, values the validation will reject)."""

    def absolute(value: Any, builtin: tuple[str, ...]) -> Any:
        if not isinstance(value, str) or not value or value in builtin or "://" in value:
            return value
        return str(Path(value).expanduser().absolute())

    def root(entry: Any) -> Any:
        if isinstance(entry, dict):
            entry = dict(entry)
            entry["path"] = absolute(entry.get("path"), (SYNTHETIC,))
            if "split" in entry:
                entry["split"] = absolute(entry["split"], BUILTIN_SPLITS)
            return entry
        return absolute(entry, (SYNTHETIC,))

    out = copy.deepcopy(data)
    if isinstance(out.get("path"), list):
        out["path"] = [root(entry) for entry in out["path"]]
    elif "path" in out:
        out["path"] = root(out["path"])
    if "split" in out:
        out["split"] = absolute(out["split"], BUILTIN_SPLITS)
    return out


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
    prefetch_batches: int = 2  # training batches drawn ahead in a background thread (0: each in its step)
    eval_chunk_seconds: float = 10.0  # chunk length for full-song inference in evaluate / separate

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.steps_per_epoch < 1 or self.batch_size < 1:
            raise ValueError("epochs, steps_per_epoch and batch_size must be >= 1")
        if self.lr <= 0 or self.segment_seconds <= 0:
            raise ValueError("lr and segment_seconds must be > 0")
        if self.prefetch_batches < 0:
            raise ValueError(f"prefetch_batches must be >= 0, got {self.prefetch_batches}")
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
        text = path.read_bytes()
    else:
        name = str(source)
        if name not in preset_names():
            raise ConfigError(f"{name}: not a config file or a preset (presets: {', '.join(preset_names())})")
        label = f"preset {name}"
        text = resources.files("sepray.presets").joinpath(f"{name}.yaml").read_text()
    raw = load_yaml(text, label) or {}
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
