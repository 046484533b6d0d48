"""A training run is never left RUNNING by accident, and a resume changes no run until it can resume.

Real ``sepray train`` commands (``sepray.cli.main``, a real SIGTERM sent to this process) and ``train_run`` on the
tiny ``unittest`` preset, a real sqlite MLflow store and real checkpoint files.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sepray import names, tracking
from sepray.checkpoint import CHECKPOINT_FILE, LOCK_FILE
from sepray.cli import main
from sepray.config import load_config
from sepray.locks import held_lock
from sepray.train_run import train_run
from tests.stores import fresh_store


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("sepray: error: "), err
    for needle in needles:
        assert needle in err[-1], err[-1]
    assert not any("Traceback" in line for line in err), err
    return err[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str]:
    """One tracking store for the module (creating one takes seconds)."""
    work = tmp_path_factory.mktemp("store")
    return work, fresh_store(work)


def test_sigterm_ends_a_training_run_killed_like_ctrl_c(store, tmp_path, monkeypatch, capsys):
    uri = store[1]
    known = {r.info.run_id for r in tracking.find_runs("sepray", uri=uri)}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)

    def terminate_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if list(tmp_path.glob(f"runs/*/{CHECKPOINT_FILE}")):
                os.kill(os.getpid(), signal.SIGTERM)  # the real signal, delivered to `sepray train`
                return
            time.sleep(0.05)

    threading.Thread(target=terminate_after_the_first_checkpoint, daemon=True).start()
    code = main(["train", "unittest", "--set", "train.epochs=100000"])
    assert code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().splitlines()[-1] == "sepray: interrupted"
    (run,) = [r for r in tracking.find_runs("sepray", uri=uri) if r.info.run_id not in known]
    assert run.info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) == before  # the CLI's handler is gone again
    assert not list(tmp_path.glob(f"runs/*/{LOCK_FILE}"))


@pytest.fixture(scope="module")
def runs(store):
    """A KILLED run (interrupted after its first epoch) and a FINISHED one, with their checkpoints."""
    work, uri = store
    cfg = load_config("unittest")

    def interrupt_after_the_first_epoch(msg: str) -> None:
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, checkpoint_root=work / "runs", uri=uri, log=interrupt_after_the_first_epoch)
    (killed,) = [p.name for p in (work / "runs").iterdir()]
    finished = train_run(cfg, checkpoint_root=work / "runs", uri=uri, log=lambda m: None).run_id
    return work, uri, killed, finished


def _state(uri: str, run_id: str) -> tuple:
    run = tracking.get_run(run_id, uri)
    return run.info.status, run.info.end_time, dict(run.data.metrics), dict(run.data.tags)


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: (d / CHECKPOINT_FILE).write_bytes(os.urandom(3000)), "not a readable sepray checkpoint"),
        (lambda d: (d / CHECKPOINT_FILE).write_bytes(b""), "not a readable sepray checkpoint"),
        (lambda d: (d / names.RUN_CONFIG).write_text("{not json"), "not a valid run config"),
    ],
    ids=["random-bytes", "empty", "config-not-json"],
)
@pytest.mark.parametrize("which", ["killed", "finished"])
def test_a_damaged_checkpoint_is_one_line_and_changes_no_run(
    runs, monkeypatch, capsys, damage, needle, which
):
    work, uri, killed, finished = runs
    run_id = killed if which == "killed" else finished
    folder = work / "runs" / run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    before = _state(uri, run_id)
    try:
        damage(folder)
        assert main(["train", "--resume", run_id, "--checkpoint-root", str(work / "runs")]) == 2
        _one_line(capsys, needle, str(folder))
        assert _state(uri, run_id) == before  # not reopened: still KILLED / FINISHED, nothing logged
        assert not (folder / LOCK_FILE).exists()
    finally:
        for name, data in saved.items():
            (folder / name).write_bytes(data)


def test_resuming_a_finished_run_leaves_it_as_it_is(runs, monkeypatch, capsys):
    work, uri, _, finished = runs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = _state(uri, finished)
    assert main(["train", "--resume", finished, "--checkpoint-root", str(work / "runs")]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == finished  # the run id, as `sepray train` prints it
    assert f"run {finished} has finished (2 epochs): nothing to resume" in err
    assert _state(uri, finished) == before


def test_a_run_another_process_trains_is_not_resumed_twice(runs, monkeypatch, capsys):
    work, uri, killed, _ = runs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = _state(uri, killed)
    with held_lock(work / "runs" / killed / LOCK_FILE, f"run {killed}"):
        assert main(["train", "--resume", killed, "--checkpoint-root", str(work / "runs")]) == 2
    _one_line(capsys, f"run {killed} is in use by pid {os.getpid()} on host ")
    assert _state(uri, killed) == before


def test_a_run_that_fails_ends_failed_with_the_reason(store, tmp_path):
    uri = store[1]
    known = {r.info.run_id for r in tracking.find_runs("sepray", uri=uri)}
    cfg = load_config("unittest", ["train.lr=1e30"])  # diverges in its first epoch
    with pytest.raises(FloatingPointError):
        train_run(cfg, checkpoint_root=tmp_path / "runs", uri=uri, log=lambda m: None)
    (run,) = [r for r in tracking.find_runs("sepray", uri=uri) if r.info.run_id not in known]
    assert run.info.status == "FAILED"
    assert run.data.tags[names.LAST_ERROR].startswith("FloatingPointError: training diverged")
    assert not (tmp_path / "runs").exists()  # no checkpoint was written: no lock or empty folder left behind
