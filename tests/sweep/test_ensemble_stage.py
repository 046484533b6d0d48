"""A sweep's ensemble stage without Ray: `finish_sweep` on a real sqlite store whose two trial runs hold real
(untrained) model packages, on a synthetic corpus with four test songs. Two different members: their errors are
largely independent, the ensemble is better beyond noise and becomes the registered winner. Two identical
members: the ensemble is the same separator, within noise, and the best trial stays the winner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sepray import names, tracking
from sepray.models import build_model
from sepray.package import save_package
from sepray.sweep.leaderboard import finish_sweep
from sepray.sweep.parent import start_parent_run
from sepray.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["data.synth_songs=10", "data.test_fraction=0.4", "data.synth_seconds=4.0", "top_k=3"]


def _trial(spec, parent, uri: str, sampled: dict, seed: int, valid: float) -> str:
    cfg = spec.resolve_trial(sampled)
    torch.manual_seed(seed)
    model = build_model(cfg.model_name, cfg.model)
    tags = {names.KIND: "trial", names.MODEL: cfg.model_name, names.OUTCOME: names.FINISHED}
    tags |= {names.SAMPLED: json.dumps(sampled), names.SIGNATURE: f"sig{seed}-{valid}"}
    run = tracking.start_run(spec.name, f"trial {seed}", tags, parent.run_id, uri)
    run.log_params(
        {"model.name": cfg.model_name, "num_parameters": sum(p.numel() for p in model.parameters())}
    )
    run.log_metrics({"valid_sdr_vocals": valid, "epoch": 2}, step=2)
    with tempfile.TemporaryDirectory() as tmp:
        save_package(model, Path(tmp) / "model", cfg.model_name, cfg.data.sample_rate)
        run.log_artifacts(Path(tmp) / "model", "model")
    run.log_dict(cfg.to_dict(), "run_config.json")
    run.end("FINISHED")
    return run.run_id


def _sweep(tmp_path, seeds) -> tuple:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml", OVERRIDES, smoke_test=True)
    tracking.ensure_experiment(spec.name, uri)
    parent = start_parent_run(spec, uri, None)
    sampled = {"model.levels": 2, "model.channels": 4, "model.upsampling": "linear", "train.lr": 1e-3}
    ids = [
        _trial(spec, parent, uri, sampled, seed, valid) for seed, valid in zip(seeds, (2.0, 1.0), strict=True)
    ]
    lines: list[str] = []
    outcome = finish_sweep(spec, parent, uri, log=lines.append)
    return uri, spec, parent, ids, outcome, "\n".join(lines)


def _ensemble(spec, parent, uri):
    (run,) = tracking.child_runs(spec.name, parent.run_id, uri, kind=names.ENSEMBLE)
    return run


def test_an_ensemble_better_beyond_noise_is_the_registered_winner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri, spec, parent, ids, outcome, output = _sweep(tmp_path, seeds=(0, 1))
    ensemble = _ensemble(spec, parent, uri)
    metrics, run_id = ensemble.data.metrics, ensemble.info.run_id
    assert metrics[names.ENSEMBLE_GAIN_LOW] > 0, ensemble.data.tags[names.ENSEMBLE_VERDICT]
    assert "better, so the ensemble is the winner" in output
    assert outcome["best_run_id"] == run_id
    assert tracking.get_run(parent.run_id, uri).data.tags[names.BEST_RUN_ID] == run_id
    versions = tracking.client(uri).search_model_versions(f"name='{spec.name}'")
    assert [v.run_id for v in versions] == [run_id]
    assert f"best: run {run_id} (ensemble), test_sdr_vocals = {metrics['test_sdr_vocals']:.2f} dB" in output
    assert f"sepray separate --run-id {run_id} song.wav" in output
    ranked = outcome["leaderboard"]
    assert [r["rank"] for r in ranked] == [1, 2, "E"] and [r["best"] for r in ranked] == [False, False, True]
    assert [r["run_id"] for r in ranked[:2]] == sorted(
        ids, key=lambda i: -tracking.get_run(i, uri).data.metrics["test_sdr_vocals"]
    )
    song = tmp_path / "song.wav"  # the registered winner separates a song from the command line
    sf.write(song, 0.1 * np.random.default_rng(1).standard_normal(8000 * 2), 8000)
    proc = subprocess.run(
        [sys.executable, "-m", "sepray", "separate", "-q", "--run-id", run_id, str(song), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "song" / "vocals.wav").is_file()


def test_an_ensemble_within_noise_leaves_the_best_trial_the_winner(tmp_path, monkeypatch):
    """Two trials with the same weights: the ensemble separates as each does (up to the share of the residual
    where clamping to [-1, 1] made a member's estimates not sum to the mixture): within noise, one line says so,
    and the best trial is the registered winner."""
    monkeypatch.chdir(tmp_path)
    uri, spec, parent, ids, outcome, output = _sweep(tmp_path, seeds=(3, 3))
    ensemble = _ensemble(spec, parent, uri)
    best = max(ids, key=lambda i: tracking.get_run(i, uri).data.metrics["test_sdr_vocals"])
    assert ensemble.data.metrics[names.ENSEMBLE_GAIN] == pytest.approx(0.0, abs=0.01)
    verdict = ensemble.data.tags[names.ENSEMBLE_VERDICT]
    assert "within noise, so #1 stays the winner" in verdict and verdict in output
    assert outcome["best_run_id"] == best
    versions = tracking.client(uri).search_model_versions(f"name='{spec.name}'")
    assert [v.run_id for v in versions] == [best]
    assert [r["rank"] for r in outcome["leaderboard"]] == [1, 2, "E"]
    assert "E   " in outcome["text"] and "E: ensemble: ensemble of #1 + #2" in outcome["text"]
