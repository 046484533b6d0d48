"""Kill a running sweep's driver (and with it the local Ray instance it started), then `--resume` it:
every trial finishes exactly once and MLflow holds one child run per configuration, none lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sepray import tracking
from tests.procs import alive, descendants

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "sweeps" / "quickstart.yaml"
NAME = "quickstart-smoke"
EPOCHS = 3
TRIALS = 4
ARGS = [
    str(SPEC),
    "--smoke-test",
    "--num-cpus",
    "2",
    "--set",
    f"budget.epochs={EPOCHS}",
    "--set",
    f"search.num_samples={TRIALS}",
    "--set",
    "search.max_concurrent=2",
    "--set",
    "scheduler=none",  # every trial runs its whole budget, so "finished once" is checkable
]


def ray_trials(exp_dir: Path) -> dict[str, list[dict]]:
    trials = {}
    for result in exp_dir.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            trials[lines[-1]["trial_id"]] = lines
    return trials


def _first_epochs_reported(exp_dir: Path) -> bool:
    return len(list(exp_dir.glob("*/checkpoint_*"))) >= 2


def _later_trials_started(exp_dir: Path) -> bool:
    """A trial has finished and the searcher has created the next ones: when Tune's state changes most."""
    finished = list(exp_dir.glob(f"*/checkpoint_{EPOCHS - 1:06d}"))
    return bool(finished) and len([p for p in exp_dir.iterdir() if p.is_dir()]) > 2


@pytest.mark.parametrize("kill_when", [_first_epochs_reported, _later_trials_started], ids=["early", "late"])
def test_killed_sweep_resumes_without_lost_or_doubled_runs(tmp_path, kill_when):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONWARNINGS": "ignore"}
    exp_dir = tmp_path / "ray_results" / NAME
    log = (tmp_path / "first.log").open("w")
    driver = subprocess.Popen(
        [sys.executable, str(REPO / "sweeps" / "run.py"), *ARGS],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: we can kill the driver and what it started
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:
            if exp_dir.is_dir() and kill_when(exp_dir):
                break
            time.sleep(0.5)
        assert driver.poll() is None, (
            f"the driver ended before it could be interrupted:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
        )
        finished_before = len(list(exp_dir.glob(f"*/checkpoint_{EPOCHS - 1:06d}")))
        assert finished_before < TRIALS, "every trial finished before the kill; nothing left to resume"
        started = descendants(driver.pid)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        log.close()
    # Ray's processes share the driver's fate; give them a moment, then make sure none lingers.
    deadline = time.time() + 30
    while time.time() < deadline and any(alive(p) for p in started):
        time.sleep(0.5)
    lingering = [p for p in started if alive(p)]
    for pid in lingering:
        os.kill(pid, signal.SIGKILL)
    assert not lingering, f"processes of the killed driver still running: {lingering}"

    proc = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "run.py"), *ARGS, "--resume"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "resuming sweep" in proc.stdout

    # Tune's view after the resume; a trial created after Tune's last saved state (killed before it was
    # saved) is proposed again under a new id and leaves its old folder behind
    final = json.loads((exp_dir / "sepray_trials.json").read_text())
    assert len(final) == TRIALS and not any(t["error"] for t in final), final
    trials = {k: v for k, v in ray_trials(exp_dir).items() if k in {t["trial_id"] for t in final}}
    assert len(trials) == TRIALS, (sorted(trials), final)
    for trial_id, results in trials.items():
        assert results[-1]["done_epochs"] == EPOCHS, (trial_id, results[-1])
    trained_finals = [
        r["signature"] for rs in trials.values() for r in rs if r.get("owner") and r["done_epochs"] == EPOCHS
    ]
    assert len(trained_finals) == len(set(trained_finals)), "a configuration was trained to completion twice"
    runs = tracking.find_runs(NAME, uri=uri)
    parents = [r for r in runs if r.data.tags.get("sepray.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = tracking.child_runs(NAME, parents[0].info.run_id, uri, kind="trial")
    ensembles = tracking.child_runs(NAME, parents[0].info.run_id, uri, kind="ensemble")
    assert (
        len(runs) == len(children) + len(ensembles) + 1 and len(ensembles) == 1
    )  # built once, after the resume
    signatures = [c.data.tags["sepray.signature"] for c in children]
    assert len(signatures) == len(set(signatures)), "a configuration has two child runs"
    assert set(signatures) == {r[-1]["signature"] for r in trials.values()}, "a trial lost its child run"
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["sepray.outcome"] == "finished"
        steps = [s for s, _ in tracking.Run(child.info.run_id, uri).metric_history("valid_sdr_vocals")]
        assert steps == list(range(1, EPOCHS + 1)), steps  # every epoch logged, once
        completions = tracking.Run(child.info.run_id, uri).metric_history("completed")
        assert completions == [(EPOCHS, 1.0)], completions  # trained to completion exactly once
    assert parents[0].data.tags.get("sepray.best_run_id") in {c.info.run_id for c in children + ensembles}
