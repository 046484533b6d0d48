"""Two tiny members of different families at different rates (a Wave-U-Net at 8 kHz, a spectrogram U-Net at
16 kHz, random weights) saved as model packages, and an ensemble package of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sepray.config import load_config, resolve
from sepray.ensemble.package import EnsembleConfig, member_configs, save_ensemble
from sepray.models import build_model
from sepray.package import read_package_info, save_package

SPEC_UNET = {"name": "spec_unet", "n_fft": 64, "hop": 16, "levels": 2, "channels": 3, "max_channels": 6}


def member_configs_raw() -> list[dict]:
    """The two members' run configs (the unittest preset's data; the second at 16 kHz)."""
    first = load_config("unittest").to_dict()
    second = load_config("unittest").to_dict()
    second["model"], second["data"]["sample_rate"] = dict(SPEC_UNET), 16000
    return [first, second]


def save_member(raw: dict, folder: Path, seed: int) -> Path:
    cfg = resolve(raw)
    torch.manual_seed(seed)
    return save_package(build_model(cfg.model_name, cfg.model), folder, cfg.model_name, cfg.data.sample_rate)


@pytest.fixture
def member_packages(tmp_path) -> list[Path]:
    return [save_member(raw, tmp_path / f"member-{i}", i) for i, raw in enumerate(member_configs_raw())]


@pytest.fixture
def ensemble_package(tmp_path, member_packages) -> Path:
    infos = [read_package_info(p) for p in member_packages]
    config = EnsembleConfig(member_configs(infos, (0.3, 0.7), ["a" * 32, None]), sample_rate=16000)
    return save_ensemble(tmp_path / "ensemble", config, member_packages)
