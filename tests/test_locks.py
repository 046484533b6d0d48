"""One driver per sweep storage (and one process per training run): the second refuses at once, naming the
first; a lock left by a killed process blocks nobody.

Real lock files, real processes (a holder started with ``subprocess`` and killed with SIGKILL), and the real
``sepray sweep`` command refusing before it starts Ray or creates a run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from sepray.cli import main
from sepray.locks import LockedError, held_lock
from sepray.sweep.driver import sweep_lock
from sepray.sweep.spec import load_spec
from tests.conftest import REPO

SPEC = REPO / "sweeps" / "quickstart.yaml"
HOLD = (
    "import sys, time; from sepray.locks import held_lock\n"
    "with held_lock(sys.argv[1], 'the test lock'):\n"
    "    print('held', flush=True); time.sleep(600)\n"
)


def _holder(path) -> subprocess.Popen:
    """Another process holding the lock at ``path`` (until it is killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    path = tmp_path / "x.lock"
    holder = _holder(path)
    try:
        with pytest.raises(LockedError) as caught, held_lock(path, "sweep x"):
            pass
        message = str(caught.value)
        assert f"sweep x is in use by pid {holder.pid} on host {socket.gethostname()} since " in message
        assert f"lock {path}" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_blocks_nobody(tmp_path):
    path = tmp_path / "x.lock"
    holder = _holder(path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert path.exists()  # the killed holder could not remove it ...
    with held_lock(path, "sweep x"):  # ... but it holds nothing: the next process takes it at once
        assert f'"pid": {os.getpid()}' in path.read_text()
    assert not path.exists()  # a holder that ends removes it


@pytest.mark.parametrize("resume", [False, True], ids=["new", "resume"])
def test_a_second_driver_of_the_same_sweep_refuses_at_once(tmp_path, monkeypatch, capsys, resume):
    """Two identical `sepray sweep ... --smoke-test` mixed their trials in one folder; the second now refuses."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    lock = sweep_lock(load_spec(SPEC, (), smoke_test=True))
    assert lock == tmp_path / "ray_results" / ".quickstart-smoke.sepray-lock"
    holder = _holder(lock)
    try:
        started = time.monotonic()
        assert main(["sweep", str(SPEC), "--smoke-test", *(["--resume"] if resume else [])]) == 2
        assert time.monotonic() - started < 20  # before Ray starts
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        f"sepray: error: sweep quickstart-smoke (storage {tmp_path / 'ray_results'}) is in use "
    )
    assert f"by pid {holder.pid} on host {socket.gethostname()} since " in err
    assert not (tmp_path / "mlflow.db").exists()  # no parent run, no store
    assert sorted(p.name for p in (tmp_path / "ray_results").iterdir()) == [lock.name]


def test_a_remote_storage_is_locked_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("SEPRAY_CACHE", str(tmp_path / "cache"))
    spec = load_spec(SPEC, ["storage=s3://bucket/sepray/ray_results"], smoke_test=True)
    other = load_spec(SPEC, ["storage=s3://bucket/other"], smoke_test=True)
    path = sweep_lock(spec)
    assert path.parent == tmp_path / "cache" / "locks" and path.name.startswith("quickstart-smoke-")
    assert sweep_lock(other) != path  # one lock per storage and sweep name
