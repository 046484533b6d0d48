"""The real-music sweep specs end to end with `--smoke-test`, on generated data sets in their layouts (real WAV /
.stem.mp4 files, a real local Ray instance, a real sqlite MLflow store): `sweeps/mir1k.yaml` on MIR-1K-style clips
(stereo, left = accompaniment, right = vocals, named `<singer>_<song>_<clip>.wav`), `sweeps/musdb.yaml` on a
MUSDB18-style `.stem.mp4` data set. MIR-1K and MUSDB18 themselves are never needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sepray import tracking
from tests.data.fixtures import mir1k_folder, write_stem_mp4

REPO = Path(__file__).resolve().parents[2]
# 10 clips: the standard split's two training singers (validation: one whole song of each) and two test singers
CLIPS = {"abjones": {1: 2, 2: 1}, "amy": {1: 2, 2: 1}, "Ani": {1: 2}, "bobon": {1: 2}}


def sweep(spec: str, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "run.py"), str(REPO / "sweeps" / spec), "--num-cpus", "2", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


def parent_and_children(name: str, uri: str):
    parent = next(r for r in tracking.find_runs(name, uri=uri) if r.data.tags.get("sepray.kind") == "sweep")
    return parent, tracking.child_runs(name, parent.info.run_id, uri, kind="trial")


def test_mir1k_smoke_sweep_picks_its_winner_by_vocals_gnsdr_at_16_khz(tmp_path):
    data = mir1k_folder(tmp_path / "Wavfile", CLIPS, seconds=2.0, sr=16000)
    proc = sweep("mir1k.yaml", tmp_path, "--smoke-test", "--set", f"data.path={data}")
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, children = parent_and_children("mir1k-smoke", uri)
    assert (
        parent.data.params["test_metric"] == "bss_eval_v3"
        and parent.data.params["select"] == "test_gnsdr_vocals"
    )
    assert {c.data.params["data.sample_rate"] for c in children} == {"8000"}
    evaluated = [c for c in children if "test_gnsdr_vocals" in c.data.metrics]
    assert evaluated
    best = max(evaluated, key=lambda c: c.data.metrics["test_gnsdr_vocals"])
    assert parent.data.tags["sepray.best_run_id"] == best.info.run_id
    # the test clips of the two test singers, scored at 16 kHz (their own rate), not at the model's 8 kHz
    path = tracking.download_artifacts(best.info.run_id, "evaluation/test_sdr.json", tmp_path / "dl", uri)
    evaluation = json.loads(path.read_text())
    assert evaluation["sample_rate"] == 16000
    assert evaluation["bss_eval_v3"]["seconds"] == {
        "Ani_1_01": 2.0,
        "Ani_1_02": 2.0,
        "bobon_1_01": 2.0,
        "bobon_1_02": 2.0,
    }
    for score in ("gnsdr", "gsir", "gsar"):
        for source in ("vocals", "accompaniment"):
            assert f"test_{score}_{source}" in best.data.metrics
    metrics = best.data.metrics
    line = f"vocals {metrics['test_gnsdr_vocals']:.2f} / {metrics['test_gsir_vocals']:.2f} / "
    assert "GNSDR / GSIR / GSAR" in proc.stdout and line in proc.stdout
    assert f"test_gnsdr_vocals = {metrics['test_gnsdr_vocals']:.2f} dB" in proc.stdout


def test_mir1k_spec_without_data_path_is_one_line(tmp_path):
    proc = sweep("mir1k.yaml", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "data.path is not set: give the MIR-1K Wavfile folder" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing started


def test_mir1k_long_smoke_sweep_trains_its_one_configuration_and_registers_it(tmp_path):
    data = mir1k_folder(tmp_path / "Wavfile", CLIPS, seconds=2.0, sr=16000)
    proc = sweep("mir1k_long.yaml", tmp_path, "--smoke-test", "--set", f"data.path={data}")
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, (child,) = parent_and_children("mir1k-long-smoke", uri)
    assert child.data.params["train.loss"] == "sdr" and child.data.params["model.n_fft"] == "256"
    assert parent.data.tags["sepray.best_run_id"] == child.info.run_id
    assert f"test_gnsdr_vocals = {child.data.metrics['test_gnsdr_vocals']:.2f} dB" in proc.stdout
    assert f"sepray separate --run-id {child.info.run_id}" in proc.stdout


@pytest.fixture
def musdb_stems(tmp_path: Path) -> Path:
    """MUSDB18 as distributed, in small: train/ (3 songs) and test/ (2 songs) of 5-stream .stem.mp4 files."""
    root = tmp_path / "musdb18"
    for split, songs in (("train", 3), ("test", 2)):
        for i in range(songs):
            write_stem_mp4(root / split / f"{split} song {i}.stem.mp4", seconds=2.0, sr=16000)
    return root


def test_musdb_smoke_sweep_runs_both_families_on_stem_mp4(tmp_path, musdb_stems):
    proc = sweep("musdb.yaml", tmp_path, "--smoke-test", "--set", f"data.path={musdb_stems}")
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, children = parent_and_children("musdb-smoke", uri)
    assert parent.data.params["test_metric"] == "museval_v4"
    assert {c.data.params["model.name"] for c in children} == {"waveunet", "spec_unet"}  # seeded draws
    evaluated = [c for c in children if "test_sdr_vocals" in c.data.metrics]
    best = max(evaluated, key=lambda c: c.data.metrics["test_sdr_vocals"])
    # top_k >= 2: the ensemble of the evaluated trials follows, scored on the same test songs; it is the winner
    # only when its verdict says so
    (ensemble,) = tracking.child_runs("musdb-smoke", parent.info.run_id, uri, kind="ensemble")
    assert "test_sdr_vocals" in ensemble.data.metrics
    wins = "the ensemble is the winner" in ensemble.data.tags["sepray.ensemble_verdict"]
    assert parent.data.tags["sepray.best_run_id"] == (ensemble if wins else best).info.run_id
    path = tracking.download_artifacts(best.info.run_id, "evaluation/test_sdr.json", tmp_path / "dl", uri)
    evaluation = json.loads(path.read_text())
    assert sorted(evaluation["songs"]) == ["test song 0", "test song 1"] and evaluation["sample_rate"] == 8000
