"""A sweep whose Ray storage fills up stops at its first full-disk failure, with one line naming the storage.

Before: 3.5 minutes of retries of every trial, then an UnpicklingError traceback from Tune reading back an
error file the full disk had cut off, and child runs whose last_error was ``"str: "``. A real sweep process
(`sweeps/run.py sweeps/quickstart.yaml --smoke-test`, one trial) on a real local Ray instance, its storage a
real 128 KiB tmpfs mounted by the test (its first checkpoint does not fit; root only: skipped with the reason
elsewhere), a real sqlite store. The driver runs with a HOME of its own: the Ray token the local instance
needs is created there, owner-only.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

from sepray import names, tracking
from tests.conftest import REPO
from tests.disk import small_disk

SPEC = REPO / "sweeps" / "quickstart.yaml"
NAME = "quickstart-smoke"


def test_a_full_ray_storage_stops_the_sweep_with_one_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    }
    env.update(MLFLOW_TRACKING_URI=uri, HOME=str(home), PYTHONWARNINGS="ignore")
    with small_disk(tmp_path / "storage", "128k") as storage:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(REPO / "sweeps" / "run.py"), str(SPEC), "--smoke-test", "--num-cpus", "1"]
            + ["--set", f"storage={storage}", "--set", "search.num_samples=1", "--set", "budget.epochs=1"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        took = time.monotonic() - started
    print(f"the sweep stopped after {took:.0f} s")
    assert proc.returncode == 2, proc.stderr[-4000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sepray: error: the sweep's Ray storage {storage} is full: trial "), last
    assert "No space left on device" in last and "--resume" in last, last
    assert "UnpicklingError" not in proc.stderr
    (parent,) = tracking.find_runs(NAME, f"tags.`{names.KIND}` = 'sweep'", uri)
    assert parent.info.status == "FAILED"
    assert parent.data.tags[names.SWEEP_STATUS] == names.FAILED
    assert f"the sweep's Ray storage {storage} is full" in parent.data.tags[names.LAST_ERROR]
    kids = tracking.child_runs(NAME, parent.info.run_id, uri)
    assert kids and all(k.info.status != "RUNNING" for k in kids)
    trial_id = last.split(" is full: trial ", 1)[1].split(":", 1)[0]
    (failed,) = [k for k in kids if k.data.tags[names.TRIAL_ID] == trial_id]
    assert failed.data.tags[names.LAST_ERROR].startswith(  # readable (it was "str: ")
        "StorageFullError: the sweep's Ray storage is full: the checkpoint of epoch 1 was not saved"
    )
    assert proc.stderr.count("Trial task failed") == 1  # stopped at the first failure: no retries
    token = home / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600  # Ray alone made it 0644
