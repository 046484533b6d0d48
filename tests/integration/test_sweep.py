"""`python sweeps/run.py sweeps/quickstart.yaml --smoke-test` end to end: a real local Ray instance, a real
sqlite MLflow store, then `sepray separate` with the winner. Plus the trial body's dedup without Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from sepray import tracking

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
    children = tracking.child_runs(NAME, parent.info.run_id, uri)
    assert all(
        r.data.tags.get("sepray.kind") == "trial"
        for r in runs
        if r is not parent and r.info.run_id != parent.info.run_id
    )
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
    children = tracking.child_runs(NAME, parent.info.run_id, uri)
    evaluated = [c for c in children if "test_sdr_vocals" in c.data.metrics]
    assert 1 <= len(evaluated) <= 2  # top_k of the smoke test
    best = max(evaluated, key=lambda c: c.data.metrics["test_sdr_vocals"])
    assert parent.data.tags["sepray.best_run_id"] == best.info.run_id
    board = json.loads(
        tracking.download_artifacts(parent.info.run_id, "leaderboard.json", work, uri).read_text()
    )
    columns, rows = board["columns"], board["data"]
    table = [dict(zip(columns, row, strict=True)) for row in rows]
    scored = [r for r in table if r["test_sdr_vocals"] is not None]
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
    children = tracking.child_runs(NAME, parent.info.run_id, uri)
    evaluated = [c for c in children if "test_gnsdr_vocals" in c.data.metrics]
    assert evaluated and all("test_gsir_vocals" in c.data.metrics for c in evaluated)
    best = max(evaluated, key=lambda c: c.data.metrics["test_gnsdr_vocals"])
    assert parent.data.tags["sepray.best_run_id"] == best.info.run_id
    gnsdr = best.data.metrics["test_gnsdr_vocals"]
    assert f"test_gnsdr_vocals = {gnsdr:.2f} dB (BSS Eval v3" in proc.stdout
    board = tracking.download_artifacts(parent.info.run_id, "leaderboard.json", tmp_path, uri)
    assert "test_gnsdr_vocals" in json.loads(board.read_text())["columns"]
