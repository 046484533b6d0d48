"""Tune's live table shows how a trial ended: its last result's outcome is updated when Tune stops it (ASHA,
the sweep's time limit)."""

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


def test_a_trial_the_time_limit_stopped_shows_cut_by_time_and_its_run_is_closed(mlflow_uri):
    """Ray 2.60's time budget sets a trial TERMINATED without `done` and calls no trial callback; ASHA's stop
    marks `done` (and calls on_trial_complete first). on_step_end tells them apart."""
    from sepray import tracking
    from sepray.sweep.raytune.callbacks import ChildRunCloser

    tracking.ensure_experiment("cut", mlflow_uri)
    parent = tracking.start_run("cut", uri=mlflow_uri)
    runs = {}
    for trial_id in ("cut", "asha", "running"):
        runs[trial_id] = tracking.start_run(
            "cut", tags={names.TRIAL_ID: trial_id}, parent_run_id=parent.run_id, uri=mlflow_uri
        )
    trials = [
        SimpleNamespace(
            trial_id="cut", status="TERMINATED", last_result={"outcome": names.RUNNING, "done_epochs": 3}
        ),
        SimpleNamespace(
            trial_id="asha", status="TERMINATED", last_result={"outcome": names.RUNNING, "done": True}
        ),
        SimpleNamespace(trial_id="running", status="RUNNING", last_result={"outcome": names.RUNNING}),
    ]
    closer = ChildRunCloser("cut", parent.run_id, mlflow_uri)
    closer.on_step_end(iteration=1, trials=trials)
    assert [t.last_result["outcome"] for t in trials] == [names.CUT_BY_TIME, names.RUNNING, names.RUNNING]
    cut = tracking.get_run(runs["cut"].run_id, mlflow_uri)
    assert cut.info.status == "KILLED" and cut.data.tags[names.OUTCOME] == names.CUT_BY_TIME
    assert cut.data.tags[names.CUT_BY] == names.SWEEP_LIMIT and cut.data.tags[names.EPOCHS] == "3"
    for trial_id in ("asha", "running"):  # ASHA's stop is on_trial_complete's to close
        assert tracking.get_run(runs[trial_id].run_id, mlflow_uri).info.status == "RUNNING"
