"""Model packages round-trip exactly; chunked full-song inference equals one-shot inference for every model."""

from __future__ import annotations

import json

import pytest
import torch

from sepray import SOURCES
from sepray.models import build_model
from sepray.package import FORMAT_VERSION, PackageError, load_package, read_package_info, save_package
from sepray.separate import run_chunked, run_whole, separate_tensor

TINY = {
    "wavenet-mulaw": (
        "wavenet",
        {
            "blocks": 2,
            "layers_per_block": 3,
            "residual_channels": 8,
            "skip_channels": 8,
            "end_channels": 8,
            "input_kernel": 5,
        },
    ),
    "wavenet-stft-regression": (
        "wavenet",
        {
            "blocks": 1,
            "layers_per_block": 3,
            "residual_channels": 8,
            "skip_channels": 8,
            "end_channels": 8,
            "input": "stft",
            "stft_n_fft": 32,
            "head": "regression",
        },
    ),
    "waveunet-context": (
        "waveunet",
        {"levels": 3, "channels": 4, "down_kernel": 5, "up_kernel": 3, "context": True},
    ),
    "waveunet-same": (
        "waveunet",
        {
            "levels": 3,
            "channels": 4,
            "down_kernel": 5,
            "up_kernel": 3,
            "context": False,
            "upsampling": "learned",
            "output": "difference",
        },
    ),
    "stft_mask": (
        "stft_mask",
        {"n_fft": 64, "hop": 16, "freq_filters": 4, "time_filters": 4, "time_kernel": 3, "bottleneck": 8},
    ),
    "spec_unet": ("spec_unet", {"n_fft": 64, "hop": 16, "levels": 2, "channels": 3, "max_channels": 6}),
}


def tiny(key: str, **extra):
    name, cfg = TINY[key]
    torch.manual_seed(0)
    return name, build_model(name, {**cfg, **extra})


@pytest.mark.parametrize("key", sorted(TINY))
def test_package_round_trip_gives_identical_output(key, tmp_path):
    name, model = tiny(key)
    model.eval()
    save_package(model, tmp_path / "pkg", name, 8000)
    info = read_package_info(tmp_path / "pkg")
    assert info.model == name and info.sample_rate == 8000 and info.sources == tuple(SOURCES)
    loaded, _ = load_package(tmp_path / "pkg")
    x = torch.randn(1, 1, model.input_length(700)) * 0.3
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    meta = json.loads((tmp_path / "pkg" / "config.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and "sepray_version" in meta


def test_package_errors_name_the_file(tmp_path):
    name, model = tiny("waveunet-context")
    pkg = save_package(model, tmp_path / "pkg", name, 8000)
    meta = json.loads((pkg / "config.json").read_text())
    meta["format_version"] = 99
    (pkg / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PackageError, match=r"config.json: package format version 99 is not supported"):
        load_package(pkg)
    with pytest.raises(PackageError, match="missing"):
        load_package(tmp_path / "nothing-here")
    meta["format_version"] = FORMAT_VERSION
    (pkg / "config.json").write_text(json.dumps(meta))
    (pkg / "state_dict.pt").unlink()
    with pytest.raises(PackageError, match="state_dict.pt: missing model weights"):
        load_package(pkg)


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("length", [1000, 2731])
def test_chunked_equals_one_shot(key, length):
    _, model = tiny(key)
    torch.manual_seed(1)
    mix = torch.randn(2, 1, length) * 0.3
    whole = run_whole(model, mix)
    chunked = run_chunked(model, mix, chunk=300)
    assert chunked.shape == whole.shape == (2, len(model.sources), 1, length)
    assert torch.allclose(chunked, whole, atol=1e-5), (chunked - whole).abs().max()


def test_separate_tensor_fills_the_missing_source_and_keeps_channels():
    _, model = tiny("waveunet-context", sources=("accompaniment",))
    mix = torch.randn(2, 1500) * 0.3  # stereo input, mono model: each channel separated on its own
    out = separate_tensor(model, mix, chunk_seconds=0.05, sample_rate=8000)
    assert set(out) == set(SOURCES)
    assert out["vocals"].shape == mix.shape
    assert torch.allclose(out["vocals"] + out["accompaniment"], mix, atol=1e-6)
    with pytest.raises(ValueError, match="channels, time"):
        separate_tensor(model, mix[0], sample_rate=8000)
