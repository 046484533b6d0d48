"""A tracking store that cannot be used is one line within seconds, and a read-only query never creates one.

Real ``sepray`` commands (``sepray.cli.main``) against real files: a ``mlflow.db`` of random bytes, a real
sqlite store made read-only (a read-only bind mount as root, chmod otherwise), a store folder that cannot be
written, and a real store on a small tmpfs that fills up (the store of a sweep that runs out of disk).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from sepray import tracking, tracking_store
from sepray.cli import main
from sepray.tracking import TrackingError
from tests.disk import fill, read_only, small_disk
from tests.stores import fresh_store
from tests.test_cli_errors import _one_line_error

ANY_RUN = "0123456789abcdef0123456789abcdef"
SPEC = "sweeps/quickstart.yaml"


@pytest.fixture(autouse=True)
def fresh_checks():
    """Each command below starts as a fresh process would: no store checked yet."""
    tracking_store._checked.clear()
    yield
    tracking_store._checked.clear()


def _song(folder):
    sf.write(str(folder / "song.wav"), np.zeros(800, dtype=np.float32), 8000)
    return str(folder / "song.wav")


def _commands(folder) -> dict[str, list[str]]:
    from tests.conftest import REPO

    return {
        "runs": ["runs", "quickstart"],
        "report": ["report", "quickstart"],
        "separate": ["separate", "-q", "--run-id", ANY_RUN, _song(folder), "-o", str(folder / "out")],
        "evaluate": ["evaluate", "--run-id", ANY_RUN],
        "sweep": ["sweep", str(REPO / SPEC), "--smoke-test"],
        "train": ["train", "unittest"],
    }


@pytest.mark.parametrize("command", ["runs", "separate", "sweep", "train", "evaluate"])
def test_a_store_of_random_bytes_is_one_line_naming_it(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store: ./mlflow.db
    db = tmp_path / "mlflow.db"
    garbage = np.random.default_rng(0).bytes(100_000)
    db.write_bytes(garbage)
    started = time.monotonic()
    assert main(_commands(tmp_path)[command]) == 2
    assert time.monotonic() - started < 30
    _one_line_error(capsys, f"{db}: not an MLflow tracking store (not an SQLite database)")
    assert db.read_bytes() == garbage
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["runs", "report", "separate", "evaluate"])
def test_a_read_only_query_never_creates_a_store(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = _commands(tmp_path)[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(args) == 2
    _one_line_error(capsys, f"{tmp_path / 'mlflow.db'}: no MLflow tracking store there")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no mlflow.db, no mlartifacts/


def test_a_read_only_store_refuses_a_training_run_at_once(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    uri = fresh_store(store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    before = (store / "mlflow.db").read_bytes()
    tracking_store._checked.clear()
    capsys.readouterr()  # mlflow's notes on creating the store
    with read_only(store):
        started = time.monotonic()
        assert main(["train", "unittest"]) == 2
        assert time.monotonic() - started < 30
        _one_line_error(capsys, "cannot be written")
        assert main(["runs", "quickstart"]) == 2  # reading it still works: the store has no such sweep
        _one_line_error(capsys, "'quickstart': no sweep of that name")
    assert (store / "mlflow.db").read_bytes() == before
    assert not (tmp_path / "runs").exists()  # no checkpoint folder: nothing was trained


def test_a_store_folder_that_cannot_be_written(tmp_path, monkeypatch, capsys):
    """mlflow retried such a store for ~107 s, then raised a traceback."""
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    with read_only(store):
        started = time.monotonic()
        assert main(["runs", "quickstart"]) == 2
        _one_line_error(capsys, f"{store / 'mlflow.db'}: no MLflow tracking store there")
        assert main(["train", "unittest"]) == 2
        _one_line_error(capsys, f"{store}: cannot be written", "cannot create the MLflow tracking store")
        assert time.monotonic() - started < 30
    assert list(store.iterdir()) == []


def test_a_store_that_fills_up_is_named_in_one_line(tmp_path):
    """The store of a sweep (or a training run) whose disk fills up: every write says which store is full."""
    with small_disk(tmp_path / "disk", "8m") as disk:
        uri = fresh_store(disk)
        run = tracking.start_run("sepray", run_name="full", uri=uri)
        run.log_metrics({"epoch": 1.0}, step=1)
        fill(disk)
        started = time.monotonic()
        with pytest.raises(TrackingError) as caught:
            for step in range(2, 2000):  # free pages inside the database take a few rows
                run.log_metrics({"epoch": float(step), "loss": 0.5}, step=step)
        assert time.monotonic() - started < 30
        message = str(caught.value)
        assert message == f"the MLflow tracking store {disk / 'mlflow.db'} is full (database or disk is full)"
        with pytest.raises(TrackingError, match=r"the MLflow artifact store of .* is full \(No space left"):
            run.log_text("x" * 100_000, "notes.txt")
