"""`python sweeps/run.py sweeps/quickstart.yaml --smoke-test` end to end: a real local Ray instance, a real
sqlite MLflow store, then `sepray separate` with the winner. Plus the trial body's dedup without Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepray import tracking
from sepray.cli import main
from sepray.evaluate import evaluate_run

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "sweeps" / "quickstart.yaml"
NAME = "quickstart-smoke"


def run_driver(cwd: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "sweeps" / "run.py"),
            str(SPEC),
            "--smoke-test",
            "--num-cpus",
            "2",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
            "PYTHONWARNINGS": "ignore",
        },
    )


def ray_trials(exp_dir: Path) -> dict[str, dict]:
    """trial id -> its last reported result (from the Ray trial folders)."""
    trials = {}
    for result in exp_dir.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            trials[lines[-1]["trial_id"]] = lines[-1]
    return trials


def artifact_paths(client, run_id: str, path: str = "") -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    work = tmp_path_factory.mktemp("sweep")
    proc = run_driver(work)
    if proc.returncode != 0:
        raise AssertionError(
            f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    uri = f"sqlite:///{work / 'mlflow.db'}"
    return work, uri, proc.stdout


def test_smoke_sweep_logs_parent_and_one_child_per_configuration(sweep):
    work, uri, _ = sweep
    runs = tracking.find_runs(NAME, uri=uri)
    parents = [r for r in runs if r.data.tags.get("sepray.kind") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {"ray.version", "sepray.version", "optuna.version"} <= set(parent.data.tags)
    assert parent.data.params["algorithm"] == "optuna" and parent.data.params["num_samples"] == "6"
    client = tracking.client(uri)
    assert {
        "sweep_spec.json",
        "search_space.json",
        "leaderboard.json",
        "leaderboard.csv",
        "leaderboard.txt",
    } <= (artifact_paths(client, parent.info.run_id))

    trials = ray_trials(work / "ray_results" / NAME)
    assert len(trials) == 6
    children = tracking.child_runs(NAME, parent.info.run_id, uri, kind="trial")
    others = [
        r for r in runs if r.info.run_id not in {parent.info.run_id, *(c.info.run_id for c in children)}
    ]
    assert [r.data.tags.get("sepray.kind") for r in others] == [
        "ensemble"
    ]  # the sweep's ensemble (test below)
    signatures = [c.data.tags["sepray.signature"] for c in children]
    assert len(signatures) == len(set(signatures)), "two child runs for one configuration"
    assert set(signatures) == {t["signature"] for t in trials.values()}, (
        "a trial without a child run, or the reverse"
    )
    assert {c.data.tags["sepray.trial_id"] for c in children} <= set(trials)
    for t in trials.values():
        owner = next(c for c in children if c.data.tags["sepray.signature"] == t["signature"])
        assert t["mlflow_run_id"] == owner.info.run_id

    for child in children:
        history = tracking.Run(child.info.run_id, uri).metric_history("valid_sdr_vocals")
        steps = [s for s, _ in history]
        assert steps == list(range(1, len(steps) + 1)) and steps, steps  # per epoch, none twice
        assert child.data.params["model.name"] == "waveunet" and "num_parameters" in child.data.params
        assert child.info.status in ("FINISHED", "KILLED")
        if child.data.tags["sepray.outcome"] == "finished":
            assert child.info.status == "FINISHED" and len(steps) == 2
            files = artifact_paths(client, child.info.run_id)
            assert {
                "model/config.json",
                "model/state_dict.pt",
                "run_config.json",
                "excerpt/mixture.wav",
                "excerpt/vocals_estimate.wav",
                "excerpt/vocals_reference.wav",
                "excerpt/accompaniment_estimate.wav",
                "excerpt/spectrograms.png",
            } <= files, files


def test_gpu_auto_trains_on_the_cpu_of_a_machine_without_gpus(sweep):
    """quickstart.yaml says resources.gpu: auto: on this local Ray instance without a GPU it resolves to 0 (the
    driver says so), and every trial ran on the CPU with CUDA_VISIBLE_DEVICES set to "" by Ray."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: benchmarks/gpu_check.py runs this spec on its GPU")
    work, uri, stdout = sweep
    assert "resources.gpu auto: 0 GPU, the trials train on CPUs (the local Ray instance has no GPU)" in stdout
    parent = next(r for r in tracking.find_runs(NAME, uri=uri) if r.data.tags.get("sepray.kind") == "sweep")
    assert json.loads(parent.data.params["resources"])["gpu"] == 0.0  # the choice, as the sweep ran
    trials = tracking.child_runs(NAME, parent.info.run_id, uri, kind="trial")
    assert trials
    for child in trials:
        tags = child.data.tags
        assert (tags["sepray.cuda_visible_devices"], tags["sepray.train_device"]) == ("", "cpu"), tags


def test_asha_stopped_a_trial_early(sweep):
    work, uri, _ = sweep
    parent = next(r for r in tracking.find_runs(NAME, uri=uri) if r.data.tags.get("sepray.kind") == "sweep")
    children = tracking.child_runs(NAME, parent.info.run_id, uri)
    stopped = [c for c in children if c.data.tags["sepray.outcome"] == "stopped_early"]
    assert stopped, [c.data.tags["sepray.outcome"] for c in children]
    for child in stopped:
        assert child.info.status == "KILLED" and child.data.metrics["epoch"] < 2
    trials = ray_trials(work / "ray_results" / NAME)
    assert min(t["training_iteration"] for t in trials.values()) < 2


def test_best_is_chosen_by_test_sdr_and_registered(sweep):
    work, uri, stdout = sweep
    parent = next(r for r in tracking.find_runs(NAME, uri=uri) if r.data.tags.get("sepray.kind") == "sweep")
    children = tracking.child_runs(NAME, parent.info.run_id, uri, kind="trial")
    evaluated = [c for c in children if "test_sdr_vocals" in c.data.metrics]
    assert 1 <= len(evaluated) <= 2  # top_k of the smoke test
    best = max(evaluated, key=lambda c: c.data.metrics["test_sdr_vocals"])
    (ensemble,) = tracking.child_runs(NAME, parent.info.run_id, uri, kind="ensemble")
    if ensemble.data.metrics.get("ensemble_gain_low", 0.0) > 0:  # better beyond noise: the ensemble won
        best = ensemble
    assert parent.data.tags["sepray.best_run_id"] == best.info.run_id
    board = json.loads(
        tracking.download_artifacts(parent.info.run_id, "leaderboard.json", work, uri).read_text()
    )
    columns, rows = board["columns"], board["data"]
    table = [dict(zip(columns, row, strict=True)) for row in rows]
    scored = [r for r in table if r["test_sdr_vocals"] is not None and r["outcome"] != "ensemble"]
    if best is not ensemble:
        assert max(scored, key=lambda r: r["test_sdr_vocals"])["run_id"] == best.info.run_id
    assert next(r for r in table if r["best"])["run_id"] == best.info.run_id
    versions = tracking.client(uri).search_model_versions(f"name='{NAME}'")
    assert [v.run_id for v in versions] == [best.info.run_id]
    assert f"sepray separate --run-id {best.info.run_id} song.wav" in stdout


def test_separate_with_the_winner(sweep):
    work, uri, _ = sweep
    parent = next(r for r in tracking.find_runs(NAME, uri=uri) if r.data.tags.get("sepray.kind") == "sweep")
    best = parent.data.tags["sepray.best_run_id"]
    song = work / "song.wav"
    song.write_bytes(next(Path(os.environ["SEPRAY_CACHE"]).rglob("mix.wav")).read_bytes())
    out = work / "separated"
    proc = subprocess.run(
        [sys.executable, "-m", "sepray", "separate", "--run-id", best, str(song), "-o", str(out)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = sf.info(str(song))
    for source in ("vocals", "accompaniment"):
        est = sf.info(str(out / "song" / f"{source}.wav"))
        assert est.frames == info.frames and est.samplerate == info.samplerate


def test_the_sweep_builds_an_ensemble_of_its_evaluated_trials(sweep, monkeypatch):
    """top_k 2: after the test stage, an ensemble of the two evaluated trials, a child run of kind "ensemble" with
    a self-contained package, scored on the test songs from the trials' kept estimates (a fresh `sepray evaluate`
    gives the same numbers), judged against the best trial, a leaderboard row "E" and a report paragraph."""
    work, uri, stdout = sweep
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    parent = next(r for r in tracking.find_runs(NAME, uri=uri) if r.data.tags.get("sepray.kind") == "sweep")
    trials = tracking.child_runs(NAME, parent.info.run_id, uri, kind="trial")
    evaluated = sorted(
        (c for c in trials if "test_sdr_vocals" in c.data.metrics),
        key=lambda c: -c.data.metrics["test_sdr_vocals"],
    )
    assert len(evaluated) == 2
    (ensemble,) = tracking.child_runs(NAME, parent.info.run_id, uri, kind="ensemble")
    ens_id, tags, metrics = ensemble.info.run_id, ensemble.data.tags, ensemble.data.metrics
    assert ensemble.info.status == "FINISHED" and tags["sepray.outcome"] == "ensemble"
    assert tags["sepray.members"] == ",".join(c.info.run_id for c in evaluated)
    files = set(tracking.list_artifact_files(ens_id, "", uri))
    assert {
        "model/config.json",
        "model/members/0/config.json",
        "model/members/0/state_dict.pt",
        "model/members/1/config.json",
        "model/members/1/state_dict.pt",
        "run_config.json",
        "ensemble/fit.json",
        "evaluation/test_sdr.json",
    } <= files, files
    config = json.loads(
        tracking.download_artifacts(ens_id, "model/config.json", work / "ens", uri).read_text()
    )
    assert config["format"] == "sepray-ensemble" and config["kind"] == "ensemble"
    assert [m["run_id"] for m in config["members"]] == [c.info.run_id for c in evaluated]
    assert abs(sum(m["weight"] for m in config["members"]) - 1) < 1e-4
    assert config["fit"]["songs"] >= 1 and config["fit"]["sources"] == ["vocals"]  # select: test_sdr_vocals
    assert "fit_valid_sdr_vocals" in metrics and "test_sdr_accompaniment" in metrics
    speeds = [c.data.metrics["test_x_realtime"] for c in evaluated]
    assert metrics["test_x_realtime"] == pytest.approx(1 / sum(1 / x for x in speeds), rel=1e-6)
    assert f"ensemble of #1 + #2 (run {ens_id}" in stdout and tags["sepray.ensemble_verdict"] in stdout
    fresh = evaluate_run(ens_id, uri=uri, log=False)  # every member separates every test song anew
    for source in ("vocals", "accompaniment"):
        assert fresh["median"][source] == pytest.approx(metrics[f"test_sdr_{source}"], abs=1e-4)
    board = tracking.download_artifacts(
        parent.info.run_id, "leaderboard.txt", work / "board", uri
    ).read_text()
    assert any(line.startswith(("E  ", "E* ")) and ens_id in line for line in board.splitlines()), board
    report = tracking.download_artifacts(
        parent.info.run_id, "report/index.html", work / "rep", uri
    ).read_text()
    assert "id='ensemble'" in report and ens_id in report
    assert main(["evaluate", "--run-id", ens_id]) == 0  # the CLI takes an ensemble's run like any other


def test_separate_with_the_ensemble(sweep):
    """`sepray separate --run-id <ensemble>` on a real WAV: every member streams it, the files sum to it."""
    work, uri, _ = sweep
    parent = next(r for r in tracking.find_runs(NAME, uri=uri) if r.data.tags.get("sepray.kind") == "sweep")
    (ensemble,) = tracking.child_runs(NAME, parent.info.run_id, uri, kind="ensemble")
    song = work / "stereo.wav"
    rng = np.random.default_rng(0)
    sf.write(song, (0.2 * rng.standard_normal((22050 * 2, 2))).clip(-1, 1), 22050, subtype="PCM_16")
    out = work / "separated-ensemble"
    proc = subprocess.run(
        [sys.executable, "-m", "sepray", "separate", "--run-id", ensemble.info.run_id, str(song), "-o", str(out)],
        cwd=work, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "s chunks, one per member" in proc.stderr
    mix, _ = sf.read(song)
    vocals, rate = sf.read(out / "stereo" / "vocals.wav")
    accompaniment, _ = sf.read(out / "stereo" / "accompaniment.wav")
    assert rate == 22050 and vocals.shape == mix.shape
    assert np.abs(vocals + accompaniment - mix).max() < 2e-4  # 16-bit files: a few steps of rounding


def test_a_configuration_proposed_twice_is_trained_once(tmp_path, monkeypatch):
    """The trial body without Ray: a second trial with the same config replays the first one's results."""
    from sepray.sweep.driver import prepare_data
    from sepray.sweep.parent import start_parent_run
    from sepray.sweep.spec import load_spec
    from sepray.sweep.trial import TrialContext, run_trial

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_spec(SPEC, ["budget.epochs=2", "search.params.model.levels.int=[2, 3]"], smoke_test=True)
    tracking.ensure_experiment(spec.name, uri)
    parent = start_parent_run(spec, uri, None)
    sweep = TrialContext.of(spec, uri, parent.run_id)
    prepare_data(spec)
    config = {"model.levels": 2, "model.channels": 4, "model.upsampling": "linear", "train.lr": 1e-3}
    reports: dict[str, list] = {"a": [], "b": []}
    run_trial(config, sweep, "trial-a", lambda m, d=None: reports["a"].append((m, d is not None)))
    run_trial(config, sweep, "trial-b", lambda m, d=None: reports["b"].append((m, d is not None)))
    assert [m["epoch"] for m, has_ckpt in reports["a"] if has_ckpt] == [1, 2]
    replayed = reports["b"]
    assert [m["epoch"] for m, _ in replayed] == [1, 2] and all(m["reused"] and not ck for m, ck in replayed)
    assert [m["valid_sdr_vocals"] for m, _ in replayed] == pytest.approx(
        [m["valid_sdr_vocals"] for m, _ in reports["a"]]
    )
    children = tracking.child_runs(spec.name, parent.run_id, uri)
    assert len(children) == 1 and children[0].data.tags["sepray.trial_id"] == "trial-a"
    assert children[0].info.status == "FINISHED"


@pytest.mark.parametrize("spec", ["seed_ablation.yaml", "umt.yaml"])
def test_new_family_specs_run_in_smoke_mode(tmp_path, spec):
    """The Structure A ablation grid and the UMT sweep end to end with tiny sizes: a winner is chosen, the
    confusion-loss trials log their extra metrics."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "run.py"), str(REPO / "sweeps" / spec), "--smoke-test",
         "--num-cpus", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "sepray separate --run-id" in proc.stdout
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = tracking.find_runs(f"{Path(spec).stem}-smoke", uri=uri)
    confusion = [r for r in runs if float(r.data.params.get("model.confusion_weight", 0) or 0) > 0]
    assert (
        confusion or spec == "umt.yaml"
    )  # the grid has a cell with the loss on; 4 random UMT samples may not
    assert all("train_confusion_loss" in r.data.metrics for r in confusion)


def test_a_smoke_sweep_selects_its_winner_by_test_gnsdr(tmp_path):
    """The quickstart smoke spec with `--set select=test_gnsdr_vocals` (two trials): the test stage computes
    BSS Eval v3 too, and the winner is the evaluated trial with the highest vocals GNSDR."""
    proc = run_driver(tmp_path, "--set", "select=test_gnsdr_vocals", "--set", "search.num_samples=2")
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = next(r for r in tracking.find_runs(NAME, uri=uri) if r.data.tags.get("sepray.kind") == "sweep")
    assert parent.data.params["test_metric"] == "bss_eval_v3"
    children = tracking.child_runs(NAME, parent.info.run_id, uri, kind="trial")
    evaluated = [c for c in children if "test_gnsdr_vocals" in c.data.metrics]
    assert evaluated and all("test_gsir_vocals" in c.data.metrics for c in evaluated)
    best = max(evaluated, key=lambda c: c.data.metrics["test_gnsdr_vocals"])
    for ensemble in tracking.child_runs(
        NAME, parent.info.run_id, uri, kind="ensemble"
    ):  # scored the same way
        assert "test_gnsdr_vocals" in ensemble.data.metrics and "test_gsir_vocals" in ensemble.data.metrics
        if ensemble.data.metrics.get("ensemble_gain_low", 0.0) > 0:
            best = ensemble
    assert parent.data.tags["sepray.best_run_id"] == best.info.run_id
    gnsdr = best.data.metrics["test_gnsdr_vocals"]
    assert f"test_gnsdr_vocals = {gnsdr:.2f} dB (BSS Eval v3" in proc.stdout
    board = tracking.download_artifacts(parent.info.run_id, "leaderboard.json", tmp_path, uri)
    assert "test_gnsdr_vocals" in json.loads(board.read_text())["columns"]
