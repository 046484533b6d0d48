"""The one epoch loop (sepray.epochs.run_epochs) that `sepray train` and every sweep trial use: the order of its
hooks, stopping, errors, the time cut, the prefetch thread's end; and `sepray train` cut by `train.max_seconds`
ending like a sweep trial (outcome `cut_by_time`, its epoch). A real Trainer on the tiny `unittest` preset, a
real sqlite MLflow store, the real `sepray train` command (in this process)."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path

import pytest

from sepray import names, tracking
from sepray.checkpoint import CHECKPOINT_FILE
from sepray.cli import main
from sepray.config import load_config
from sepray.epochs import STOPPED, EpochHooks, run_epochs
from sepray.package import load_package
from sepray.train import Trainer
from tests.stores import fresh_store

PREFETCH_THREAD = "sepray-batches"  # the name BatchPrefetcher gives its thread


def _prefetch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == PREFETCH_THREAD and t.is_alive()}


class Recorder(EpochHooks):
    """Records each hook call as (hook, epoch); ``stop_at``: the number of the call (from 1) whose should_stop says
    True; ``fail_at``: the (hook, epoch) that raises; ``take_errors``: what on_error answers."""

    def __init__(self, folder: Path, stop_at=None, fail_at=None, take_errors=False):
        self.folder, self.stop_at, self.fail_at, self.take_errors = folder, stop_at, fail_at, take_errors
        self.calls: list[tuple[str, int]] = []
        self.steps: list[int] = []
        self.checkpointed: list[int] = []  # the epoch of the checkpoint each report found in its folder
        self.errors: list[BaseException] = []

    def _call(self, hook: str, trainer) -> None:
        self.calls.append((hook, trainer.epoch))
        if self.fail_at == (hook, trainer.epoch):
            raise RuntimeError(f"{hook} failed at epoch {trainer.epoch}")

    def on_step(self, step, loss):
        self.steps.append(step)

    def should_stop(self, trainer):
        self._call("should_stop", trainer)
        return self.stop_at == len(self.calls)

    def on_epoch(self, result, trainer):
        assert result[names.EPOCH] == trainer.epoch and result[names.TRAIN_SECONDS_METRIC] > 0
        assert {names.TRAIN_LOSS, names.LR, names.STEPS_PER_SECOND, names.sdr_metric("valid")} <= set(result)
        self._call("on_epoch", trainer)

    def checkpoint_dir(self, trainer):
        self._call("checkpoint_dir", trainer)
        return nullcontext(self.folder)

    def on_finish(self, result, trainer):
        self._call("on_finish", trainer)

    def report(self, result, trainer, checkpoint_dir):
        import torch

        state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        self.checkpointed.append(int(state["epoch"]))
        self._call("report", trainer)

    def on_error(self, exc, trainer):
        self.errors.append(exc)
        return self.take_errors


def _trainer(*overrides: str) -> Trainer:
    return Trainer(load_config("unittest", list(overrides)), device="cpu")


# the hooks of every epoch after its first should_stop (before it trains): after its validation, then on
EPOCH = ["should_stop", "should_stop", "on_epoch", "checkpoint_dir"]


def test_hooks_run_in_order_and_the_run_is_finished_before_its_last_report(tmp_path):
    trainer = _trainer("train.epochs=2", "train.steps_per_epoch=2")
    hooks = Recorder(tmp_path)
    end = run_epochs(trainer, hooks)
    assert end.outcome == names.FINISHED and end.result[names.EPOCH] == 2
    first = [("should_stop", 0)] + [(h, 1) for h in EPOCH[1:]] + [("report", 1)]
    second = [("should_stop", 1)] + [(h, 2) for h in EPOCH[1:]] + [("on_finish", 2), ("report", 2)]
    assert hooks.calls == first + second
    assert hooks.checkpointed == [1, 2]  # each report sees that epoch's checkpoint in its folder
    assert hooks.steps == [1, 2, 3, 4] and not hooks.errors


def test_a_time_cut_ends_after_the_epoch_that_passed_max_seconds_and_stops_the_prefetch_thread(tmp_path):
    before = _prefetch_threads()
    trainer = _trainer("train.epochs=1000", "train.max_seconds=0.001", "train.prefetch_batches=2")
    hooks = Recorder(tmp_path)
    end = run_epochs(trainer, hooks)
    assert end.outcome == names.CUT_BY_TIME and trainer.epoch == 1 and trainer.cut_by_time
    assert hooks.calls[-2:] == [("on_finish", 1), ("report", 1)]
    # 998 more epochs' batches were allowed: the thread was drawing ahead when the loop ended, and is gone
    assert not _prefetch_threads() - before  # no thread of this trainer's left


@pytest.mark.parametrize("call, trained", [(6, 1), (7, 2)], ids=["before-epoch-2", "after-epoch-2"])
def test_should_stop_ends_the_loop_at_once_before_or_after_an_epoch(tmp_path, call, trained):
    trainer = _trainer("train.epochs=3")
    hooks = Recorder(tmp_path, stop_at=call)  # epoch 1's calls are 1-5; 6 is before epoch 2, 7 after it
    end = run_epochs(trainer, hooks)
    assert end.outcome == STOPPED and trainer.epoch == trained and end.result[names.EPOCH] == trained
    assert hooks.calls[-1] == ("should_stop", trained) and len(hooks.calls) == call
    assert ("on_epoch", 2) not in hooks.calls and hooks.checkpointed == [1]  # nothing logged or saved for it
    assert not any(h == "on_finish" for h, _ in hooks.calls)


@pytest.mark.parametrize("take", [True, False], ids=["taken", "raised"])
def test_an_error_goes_to_on_error_which_takes_it_or_lets_it_raise(tmp_path, take):
    before = _prefetch_threads()
    trainer = _trainer("train.epochs=3")
    hooks = Recorder(tmp_path, fail_at=("report", 2), take_errors=take)
    if take:
        end = run_epochs(trainer, hooks)
        assert end.outcome == names.FAILED and end.result[names.EPOCH] == 2
    else:
        with pytest.raises(RuntimeError, match="report failed at epoch 2"):
            run_epochs(trainer, hooks)
    assert [str(e) for e in hooks.errors] == ["report failed at epoch 2"]
    assert not _prefetch_threads() - before  # no thread of this trainer's left


def test_a_resumed_trainer_that_had_finished_is_finished_at_once(tmp_path):
    trainer = _trainer("train.epochs=1")
    run_epochs(trainer, Recorder(tmp_path))
    resumed = _trainer("train.epochs=1")
    resumed.load_checkpoint(tmp_path)
    hooks = Recorder(tmp_path)
    end = run_epochs(resumed, hooks)
    assert end.outcome == names.FINISHED and end.result == {}
    assert hooks.calls == [("on_finish", 1)]


# -- `sepray train` ends like a sweep trial -------------------------------------------------------------------


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    uri = fresh_store(tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def _trained_run(capsys, uri: str, *overrides: str):
    args = ["train", "unittest"] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    return tracking.get_run(out.strip().splitlines()[-1], uri), err


def test_sepray_train_cut_by_max_seconds_says_cut_by_time_and_its_epoch(store, tmp_path, capsys):
    run, err = _trained_run(capsys, store, "train.epochs=50", "train.max_seconds=0.001")
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags[names.OUTCOME] == "cut_by_time" and tags[names.EPOCHS] == "1"
    assert tags[names.CUT_BY] == "train.max_seconds"
    assert run.data.metrics["epoch"] == 1 and float(tags[names.TRAIN_SECONDS]) >= 0
    assert "train.max_seconds=0.001 ran out after epoch 1 of 50" in err
    # its model is the package of that epoch, like a cut trial's
    model, info = load_package(tracking.download_package(run.info.run_id, tmp_path / "pkg", store))
    assert info.model == "waveunet" and sum(p.numel() for p in model.parameters()) > 0


def test_sepray_train_that_trains_all_its_epochs_says_finished(store, capsys):
    run, err = _trained_run(capsys, store, "train.epochs=2")
    tags = run.data.tags
    assert run.info.status == "FINISHED" and tags[names.OUTCOME] == "finished" and tags[names.EPOCHS] == "2"
    assert names.CUT_BY not in tags and "ran out" not in err
    assert [s for s, _ in tracking.Run(run.info.run_id, store).metric_history("train_seconds")] == [1, 2]
