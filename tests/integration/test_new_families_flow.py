"""`sepray train` from the structure-a-small and umt-small presets (shrunk), then `sepray separate --run-id` with
the UMT in both decoder modes (the autoregressive one generates, with a per-sample progress bar)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.integration.test_cli_flow import sepray

TINY_DATA = ["data.synth_songs=6", "data.synth_seconds=3.0", "data.valid_fraction=0.3"]
TINY_TRAIN = ["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.segment_seconds=0.1",
              "train.valid_crops=2", "train.valid_seconds=0.2", "train.threads=1"]  # fmt: skip
TINY_MODEL = {
    "structure-a-small": ["model.encoder_layers_per_block=3", "model.decoder_layers_per_block=3",
                          "model.residual_channels=8", "model.latent_channels=4"],
    "umt-small": ["model.encoder_layers_per_block=3", "model.decoder_layers_per_block=3", "model.pool=40",
                  "model.encoder_channels=8", "model.residual_channels=8", "model.latent_channels=4"],
}  # fmt: skip


def train(preset: str, work: Path, *extra: str) -> str:
    sets = [*TINY_DATA, *TINY_TRAIN, *TINY_MODEL[preset], *extra]
    proc = sepray("train", preset, *[a for s in sets for a in ("--set", s)], cwd=work)
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("families")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    song = work / "song.wav"
    t = np.arange(8000 * 2) / 8000
    sf.write(song, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 8000)
    return work


def test_structure_a_trains_from_its_preset(work):
    assert len(train("structure-a-small", work)) == 32


@pytest.mark.parametrize("decoder", ["separator", "autoregressive"])
def test_umt_trains_from_its_preset_and_separates(work, decoder):
    run_id = train("umt-small", work, f"model.decoder={decoder}")
    out = work / f"out-{decoder}"
    proc = sepray("separate", "--run-id", run_id, str(work / "song.wav"), "-o", str(out), cwd=work)
    for name in ("vocals", "accompaniment"):
        data, rate = sf.read(out / "song" / f"{name}.wav")
        assert rate == 8000 and len(data) == 16000 and np.isfinite(data).all()
    unit = "sample" if decoder == "autoregressive" else "chunk"
    assert f"{unit}/s" in proc.stderr or f"s/{unit}" in proc.stderr, proc.stderr[-2000:]
