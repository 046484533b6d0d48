"""`sepray export` and `sepray separate --engine onnx|torch-export`, really run: `sepray` in subprocesses, a real
sqlite MLflow store, real WAV files. The exported engines' separations equal the eager one within 1e-4 (plus the
16-bit rounding of the files)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sepray import tracking
from sepray.export import TOLERANCE, load_package_engine
from sepray.models import build_model
from sepray.package import save_package
from tests.integration.test_cli_flow import sepray

PCM16_STEP = 1 / 32768  # one step of the 16-bit WAVs separate writes
SONG_RATE = 44100  # the model runs at 8 kHz: separation resamples down and back up


def log_package(work: Path, uri: str, name: str, config: dict, run_name: str) -> str:
    torch.manual_seed(0)
    model = build_model(name, config)
    with torch.no_grad():  # batch norm statistics as a trained model has them, so every layer matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    package = save_package(model, work / run_name, name, 8000)
    run = tracking.start_run("sepray", run_name=run_name, uri=uri)
    run.log_artifacts(package, "model")
    run.end()
    return run.run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(workdir, uri, spec_unet run, autoregressive UMT run, song): two runs logged by hand in a sqlite store."""
    work = tmp_path_factory.mktemp("export")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    spec = log_package(work, uri, "spec_unet", {"n_fft": 64, "hop": 16, "levels": 2, "channels": 4}, "spec")
    umt = dict(
        decoder="autoregressive", encoder_blocks=1, encoder_layers_per_block=2, encoder_channels=4,
        latent_channels=3, pool=4, classifier_channels=4, classifier_layers=1, decoder_blocks=1,
        decoder_layers_per_block=2, residual_channels=4, skip_channels=4, end_channels=4,
    )  # fmt: skip
    umt_run = log_package(work, uri, "umt", umt, "umt")
    t = np.arange(int(2.5 * SONG_RATE)) / SONG_RATE  # 2.5 s stereo: a voice-like tone over chords and noise
    voice = 0.3 * np.sin(2 * math.pi * 440 * t * (1 + 0.01 * np.sin(2 * math.pi * 5 * t)))
    rng = np.random.default_rng(0)
    chords = 0.2 * np.sin(2 * math.pi * 110 * t) + 0.05 * rng.standard_normal(t.size)
    song = work / "song.wav"
    sf.write(
        str(song), np.stack([voice + chords, 0.8 * voice + chords], axis=1).astype(np.float32), SONG_RATE
    )
    yield work, uri, spec, umt_run, song
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def separated(out: Path, song: Path) -> dict[str, np.ndarray]:
    return {name: sf.read(str(out / song.stem / f"{name}.wav"))[0] for name in ("vocals", "accompaniment")}


def assert_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for name in a:
        assert a[name].shape == b[name].shape
        assert np.abs(a[name] - b[name]).max() <= TOLERANCE + PCM16_STEP, name
        assert np.abs(a[name]).max() > 0.01  # not silence


def test_export_logs_the_graph_to_the_run_and_separate_onnx_equals_eager(runs, tmp_path):
    work, uri, run_id, _, song = runs
    proc = sepray("export", "--run-id", run_id, "-o", str(tmp_path / "standalone"), cwd=work)
    assert proc.stdout.strip() == str(tmp_path / "standalone")
    assert f"logged model/export/onnx/ to run {run_id}" in proc.stderr
    files = set(tracking.list_artifact_files(run_id, "model", uri))
    assert {"model/export/onnx/graph.onnx", "model/export/onnx/export.json"} <= files
    engine, info = load_package_engine(tmp_path / "standalone", "onnx")  # the -o copy is a whole package
    assert info.model == "spec_unet" and engine.engine == "onnx"
    eager = sepray("separate", "-q", "--run-id", run_id, str(song), "-o", str(tmp_path / "eager"), cwd=work)
    onnx = sepray(
        "separate", "-q", "--run-id", run_id, str(song), "-o", str(tmp_path / "onnx"), "--engine", "onnx",
        "--chunk-seconds", "0.7", cwd=work,
    )  # fmt: skip
    assert "exporting" not in onnx.stderr  # the run's own export was used
    assert eager.stdout.strip() == str(tmp_path / "eager" / song.stem)
    assert_close(separated(tmp_path / "onnx", song), separated(tmp_path / "eager", song))
    manifest = json.loads((tmp_path / "onnx" / song.stem / ".sepray-separation.json").read_text())
    assert manifest["frames"] == sf.info(str(song)).frames


def test_separate_torch_export_without_an_export_exports_on_the_fly(runs, tmp_path):
    work, _, run_id, _, song = runs
    eager = sepray("separate", "-q", "--run-id", run_id, str(song), "-o", str(tmp_path / "eager"), cwd=work)
    proc = sepray(
        "separate", "-q", "--run-id", run_id, str(song), "-o", str(tmp_path / "te"), "--engine", "torch-export",
        cwd=work,
    )  # fmt: skip
    assert eager.returncode == 0 and "no torch-export export: exporting it for this run only" in proc.stderr
    assert_close(separated(tmp_path / "te", song), separated(tmp_path / "eager", song))


def test_export_of_the_autoregressive_umt_is_one_line_and_logs_nothing(runs, tmp_path):
    work, uri, _, run_id, song = runs
    proc = sepray("export", "--run-id", run_id, "-o", str(tmp_path / "x"), cwd=work, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "decoder 'autoregressive' cannot be exported" in lines[0]
    assert not (tmp_path / "x").exists()
    assert not any("/export/" in f for f in tracking.list_artifact_files(run_id, "model", uri))
    proc = sepray("separate", "--run-id", run_id, str(song), "-o", str(tmp_path / "o"), "--engine", "onnx",
                  cwd=work, check=False)  # fmt: skip
    assert proc.returncode == 2 and "cannot be exported" in proc.stderr and not (tmp_path / "o").exists()


def test_export_refuses_an_existing_output_folder(runs, tmp_path):
    work, _, run_id, _, _ = runs
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    proc = sepray("export", "--run-id", run_id, "-o", str(tmp_path / "taken"), cwd=work, check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"


def test_separate_onnx_without_onnxruntime_names_the_extra(runs, tmp_path):
    """A user without the extra: the import fails (a package that raises ImportError shadows onnxruntime)."""
    work, _, run_id, _, song = runs
    blocker = tmp_path / "blocker" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('onnxruntime is not installed')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "sepray", "separate", "--run-id", run_id, str(song), "-o", str(tmp_path / "o"),
         "--engine", "onnx"],
        cwd=work, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'sepray[export]'" in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()
