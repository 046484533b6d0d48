"""Tune's live table shows how a trial ended: its last result's outcome is updated when Tune stops it."""

from __future__ import annotations

from types import SimpleNamespace

from sepray import names
from sepray.sweep.raytune.callbacks import _show_outcome


def test_a_stopped_trial_shows_stopped_early_and_a_finished_one_keeps_finished():
    stopped = SimpleNamespace(last_result={"outcome": names.RUNNING, "epoch": 2})
    finished = SimpleNamespace(last_result={"outcome": names.FINISHED, "epoch": 6})
    never_reported = SimpleNamespace(last_result={})
    for trial in (stopped, finished, never_reported):
        _show_outcome(trial, names.STOPPED_EARLY)
    assert stopped.last_result == {"outcome": names.STOPPED_EARLY, "epoch": 2}
    assert finished.last_result["outcome"] == names.FINISHED
    assert never_reported.last_result["outcome"] == names.STOPPED_EARLY
    failed = SimpleNamespace(last_result={"outcome": names.RUNNING})
    _show_outcome(failed, names.FAILED)
    assert failed.last_result["outcome"] == names.FAILED
