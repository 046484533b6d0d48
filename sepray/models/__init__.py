"""Model registry: name -> (frozen Config dataclass, Separator class)."""

from __future__ import annotations

from typing import Any

from sepray.models.base import Separator
from sepray.models.spec_unet import SpecUNet, SpecUNetConfig
from sepray.models.stft_mask import STFTMask, STFTMaskConfig
from sepray.models.structure_a import StructureA, StructureAConfig
from sepray.models.umt import UMT, UMTConfig
from sepray.models.wavenet import WaveNet, WaveNetConfig
from sepray.models.waveunet import WaveUNet, WaveUNetConfig
from sepray.schema import ConfigError, build_dataclass

REGISTRY: dict[str, tuple[type, type[Separator]]] = {
    "wavenet": (WaveNetConfig, WaveNet),
    "waveunet": (WaveUNetConfig, WaveUNet),
    "stft_mask": (STFTMaskConfig, STFTMask),
    "spec_unet": (SpecUNetConfig, SpecUNet),
    "structure_a": (StructureAConfig, StructureA),
    "umt": (UMTConfig, UMT),
}


def make_config(name: str, values: dict[str, Any]):
    """Build the frozen config of model ``name``; unknown names/keys or bad values raise ConfigError."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(REGISTRY)}")
    return build_dataclass(REGISTRY[name][0], dict(values), f"model {name}")


def build_model(name: str, values: dict[str, Any] | Any) -> Separator:
    """Instantiate model ``name`` from a config dict (or its config dataclass)."""
    config_cls, model_cls = REGISTRY[name] if name in REGISTRY else (None, None)
    if config_cls is None:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(REGISTRY)}")
    config = values if isinstance(values, config_cls) else make_config(name, values)
    return model_cls(config)
