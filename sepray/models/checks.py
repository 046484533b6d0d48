"""``__post_init__`` checks shared by the model configs: each raises ValueError naming the field."""

from __future__ import annotations

from collections.abc import Iterable


def check_sources(config) -> None:
    """``sources`` non-empty and unique, ``audio_channels >= 1``."""
    if not config.sources or len(set(config.sources)) != len(config.sources):
        raise ValueError(f"sources must be non-empty and unique, got {config.sources!r}")
    if config.audio_channels < 1:
        raise ValueError(f"audio_channels must be >= 1, got {config.audio_channels}")


def check_choices(config, choices: dict[str, tuple[str, ...]]) -> None:
    """Every field named in ``choices`` holds one of its allowed values."""
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")


def check_at_least(config, names: Iterable[str], minimum: int = 1) -> None:
    for name in names:
        if getattr(config, name) < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {getattr(config, name)}")


def check_odd(config, names: Iterable[str]) -> None:
    """Odd kernels keep every valid convolution centred."""
    for name in names:
        value = getattr(config, name)
        if value < 1 or value % 2 == 0:
            raise ValueError(f"{name} must be odd and >= 1 (keeps the output centred), got {value}")
