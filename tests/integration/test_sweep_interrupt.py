"""A sweep that is interrupted (Ctrl-C, SIGTERM) or can never run must say so: no winner, nothing RUNNING.

Real sweep processes (`python sweeps/run.py sweeps/quickstart.yaml --smoke-test`) on a real local Ray
instance with a real sqlite MLflow store; the signals are real signals sent to the driver process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sepray import names, tracking

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "sweeps" / "quickstart.yaml"
NAME = "quickstart-smoke"


def _env(cwd: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "PYTHONWARNINGS": "ignore"}


def _driver(cwd: Path, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "sweeps" / "run.py"), str(SPEC), "--smoke-test", *args]


def _parents(uri: str):
    return tracking.find_runs(NAME, f"tags.`{names.KIND}` = 'sweep'", uri)


RAY_PROCESSES = ("gcs_server", "raylet", "python", "ray::")


def _check_listening_sockets(driver_pid: int) -> None:
    """What a running local sweep listens on: Ray's own processes only, no dashboard, token auth on."""
    from tests.procs import descendants, listening_sockets

    listening = listening_sockets({driver_pid, *descendants(driver_pid)})
    print("listening sockets of the sweep:", listening)
    assert listening, "a running sweep has Ray's servers listening"
    assert all(name.startswith(RAY_PROCESSES) for _, _, name in listening), listening
    assert not [port for _, port, _ in listening if port in (8265, 10001)], "no dashboard / Ray client server"
    assert (Path.home() / ".ray" / "auth_token").is_file(), "Ray's token authentication guards those ports"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_publishes_no_winner_and_says_how_to_resume(tmp_path, signum):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(
        _driver(tmp_path, "--num-cpus", "1"),
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:  # wait for the first trial's first epoch
            # the store is read only once the driver has created it (a concurrent first open can break the
            # sqlite schema migration)
            if any(f"sweep {NAME}: parent run" in line for line in list(lines)):
                parents = _parents(uri)
                kids = tracking.child_runs(NAME, parents[0].info.run_id, uri) if parents else []
                if any("epoch" in k.data.metrics for k in kids):
                    break
            time.sleep(1.0)
        assert proc.poll() is None, (
            "the sweep ended before it could be interrupted: " + "".join(lines)[-2000:]
        )
        _check_listening_sockets(proc.pid)
        proc.send_signal(signum)
        proc.wait(timeout=180)
        reader.join(timeout=30)
        out = "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, out[-3000:]
    assert "--resume" in out and "nothing was" in out, out[-3000:]
    assert "best: run" not in out
    (parent,) = _parents(uri)
    assert parent.info.status == "KILLED"
    assert parent.data.tags[names.SWEEP_STATUS] == names.INTERRUPTED
    assert names.BEST_RUN_ID not in parent.data.tags
    kids = tracking.child_runs(NAME, parent.info.run_id, uri)
    assert kids and all(k.info.status != "RUNNING" for k in kids)
    assert all(names.BEST not in k.data.tags for k in kids)
    from mlflow import MlflowClient

    assert not MlflowClient(uri).search_registered_models(f"name = '{NAME}'")


@pytest.mark.parametrize(
    "args, missing",
    [(["--num-cpus", "0"], "CPU"), (["--num-cpus", "1", "--set", "resources.cpu=4"], "CPU")],
    ids=["no-cpus", "more-cpus-than-the-machine"],
)
def test_a_sweep_that_can_never_be_scheduled_fails_at_once(tmp_path, args, missing):
    started = time.time()
    proc = subprocess.run(
        _driver(tmp_path, *args),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sepray: error:") and "resources" in last and missing in last, last
    assert time.time() - started < 90
    assert not (tmp_path / "mlflow.db").exists() or not _parents(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_trial_pending_too_long_fails_the_sweep_with_the_reason(tmp_path):
    """One CPU, two trials at a time: the second waits for the first; over budget.pending_seconds it fails."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        _driver(
            tmp_path,
            "--num-cpus",
            "1",
            "--set",
            "search.max_concurrent=2",
            "--set",
            "budget.pending_seconds=2",
        ),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "budget.pending_seconds" in last and "waited over 2 s" in last, last
    (parent,) = _parents(uri)
    assert parent.info.status == "FAILED" and parent.data.tags[names.SWEEP_STATUS] == names.FAILED
    assert all(k.info.status != "RUNNING" for k in tracking.child_runs(NAME, parent.info.run_id, uri))
