"""Tune callbacks of a sweep (run in the driver; each picklable, Tune saves them with its state): closing the
child runs of trials Tune stops or gives up on, counting retries, a consistent copy of Tune's state for
``--resume``, noting Ctrl-C / SIGTERM, failing a sweep whose trials wait too long for resources.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray.tune import Callback

from sepray import names, tracking
from sepray.errors import SweepError
from sepray.sweep import snapshot
from sepray.sweep.raytune.cluster import describe_resources
from sepray.sweep.raytune.faults import error_line, trial_error_text

# The signal (SIGINT / SIGTERM) that interrupted the running sweep, if any: read by the driver after ``fit``.
INTERRUPTED: dict[str, int | None] = {"signal": None}


class ChildRunCloser(Callback):
    """Closes the MLflow child run of a trial Tune stops (ASHA, the sweep's time limit) or gives up on
    (picklable).

    How the two stops differ in Ray 2.60: ASHA's STOP decision (like a trial's own end) goes through
    ``TuneController.stop_trial``, which marks the trial's last result ``done`` and calls
    ``on_trial_complete``. The time limit (``time_budget_s``, a TimeoutStopper) makes
    ``_stop_experiment_if_needed`` set every unfinished trial TERMINATED directly: no callback, and its last
    result is not ``done``; ``on_step_end`` of the same step sees it. That is what Tune saves, so after the
    sweep (also after ``--resume``) a trial that ended without an error and without ``done`` was cut by the
    time limit (:func:`sepray.sweep.raytune.tuner.keep_cut_trials`).
    """

    def __init__(self, experiment: str, parent_run_id: str, uri: str):
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.uri = uri
        self._retries: dict[str, dict[str, Any]] = {}  # trial id -> retry tags not yet on its run
        self._tagged: dict[str, int] = {}  # trial id -> the retry count its run holds
        self._ended: set[str] = set()  # trials seen ending (complete, or cut by the time limit)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id in self._retries:
            self._tag_retries(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended.add(trial.trial_id)
        self._tag_retries(trial.trial_id)
        self._close(trial, "KILLED", names.STOPPED_EARLY)
        _show_outcome(trial, names.STOPPED_EARLY)

    def on_step_end(self, iteration, trials, **info):
        """Trials the time limit just stopped: their runs are closed ``cut_by_time`` at once (a trial still
        inside an epoch sees it and logs nothing more); the driver adds the model after Tune is done."""
        for trial in trials:
            if trial.status != "TERMINATED" or trial.trial_id in self._ended:
                continue
            self._ended.add(trial.trial_id)
            if cut_by_time(trial.last_result):
                self._close(trial, "KILLED", names.CUT_BY_TIME)
                _show_outcome(trial, names.CUT_BY_TIME)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._retries.pop(trial.trial_id, None)
        self._close(trial, "FAILED", names.FAILED, failed=True)
        _show_outcome(trial, names.FAILED)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Ray restarts the trial from its last checkpoint (its node died, it crashed): count it on the run,
        which the restarted trial reattaches (later, when the tracking store is down right now)."""
        self._retries[trial.trial_id] = _retry_tags(trial)
        self._tag_retries(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        """Every restart on its run, whatever happened between: a retry whose tags found no run yet (the
        tracking store was down, the restarted trial reported nothing more), or one Tune counted without a
        recovery callback this object saw (a driver resumed with ``--resume``)."""
        for trial in trials:
            if trial.status == "ERROR" or trial.num_failures <= self._tagged.get(trial.trial_id, 0):
                continue
            self._retries.setdefault(trial.trial_id, _retry_tags(trial))
            self._tag_retries(trial.trial_id)

    def _tag_retries(self, trial_id: str) -> None:
        tags = self._retries.get(trial_id)
        if not tags:
            return
        try:
            runs = tracking.child_runs(self.experiment, self.parent_run_id, self.uri, trial_id=trial_id)
            for r in runs:
                tracking.Run(r.info.run_id, self.uri).set_tags(tags)
            if runs:
                del self._retries[trial_id]
                self._tagged[trial_id] = int(tags[names.RETRIES])
        except Exception as exc:  # tried again at the trial's next result, its end and the experiment's end
            print(f"sepray: could not tag the retry of trial {trial_id} yet: {exc}", file=sys.stderr)

    def _close(self, trial, status: str, outcome: str, failed: bool = False) -> None:
        try:
            runs = tracking.child_runs(self.experiment, self.parent_run_id, self.uri, trial_id=trial.trial_id)
            for r in runs:
                if r.info.status == "RUNNING":
                    run = tracking.Run(r.info.run_id, self.uri)
                    tags = {
                        names.OUTCOME: outcome,
                        names.EPOCHS: (trial.last_result or {}).get(names.RESULT_DONE_EPOCHS, 0),
                    }
                    if failed:
                        tags[names.RETRIES] = max(trial.num_failures - 1, 0)
                        tags[names.LAST_ERROR] = _trial_error(trial)
                    if outcome == names.CUT_BY_TIME:
                        tags[names.CUT_BY] = names.SWEEP_LIMIT
                    run.set_tags(tags)
                    run.end(status)
        except Exception as exc:  # never break the sweep over bookkeeping; close_orphans runs at the end
            print(f"sepray: could not close the MLflow run of trial {trial.trial_id}: {exc}", file=sys.stderr)


def cut_by_time(last_result: dict[str, Any] | None) -> bool:
    """Whether a TERMINATED trial with this last result was stopped by the sweep's time limit: ASHA's stop
    and a trial's own end mark the last result ``done``; the time limit does not."""
    return not (last_result or {}).get("done")


def _show_outcome(trial, outcome: str) -> None:
    """Tune's live table shows a trial's last result: a trial stopped (or failed) after reporting "running"
    shows how it ended instead."""
    last = trial.last_result
    if isinstance(last, dict) and last.get(names.RESULT_OUTCOME) in (None, names.RUNNING):
        last[names.RESULT_OUTCOME] = outcome


def _retry_tags(trial) -> dict[str, Any]:
    """The tags of a trial's restarts so far: how many, and why the last attempt failed."""
    return {names.RETRIES: trial.num_failures, names.LAST_ERROR: _trial_error(trial)}


def _trial_error(trial) -> str:
    """One line on why a trial's attempt failed (the node died, the exception it raised)."""
    return error_line(trial_error_text(trial)) or "unknown error"


class StateSnapshot(Callback):
    """After each save of Tune's experiment state, keeps a consistent copy of it (picklable).

    See :mod:`sepray.sweep.snapshot`: Tune's own copy to the experiment folder can mix two saves when the driver
    is killed; ``--resume`` restores this copy instead. Tune calls ``get_state`` right after writing the trial
    list and the searcher state to its driver staging folder, which the trial hooks tell us.
    """

    def __init__(self, experiment: str):
        self.experiment = experiment
        self._staging: str | None = None

    def _note(self, trial) -> None:
        self._staging = trial.storage.experiment_driver_staging_path

    def on_trial_start(self, iteration, trials, trial, **info):
        self._note(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._note(trial)

    def get_state(self):
        if self._staging is not None:
            try:
                snapshot.take(Path(self._staging), Path(self.experiment))
            except OSError as exc:  # never break the sweep over it; --resume falls back to Tune's own files
                print(f"sepray: could not copy Tune's experiment state: {exc}", file=sys.stderr)
        return None

    def __getstate__(self):
        return {"experiment": self.experiment, "_staging": None}


class InterruptWatch(Callback):
    """Notes a Ctrl-C (SIGINT) or SIGTERM of the driver, and lets Tune stop gracefully on either (picklable).

    While ``fit`` runs, Tune's own SIGINT handler saves the experiment state and ends the loop; it replaces any
    handler installed before. ``setup`` runs after Tune installed it, so it wraps it here: the signal is noted for
    the driver (an interrupted sweep must not publish a winner), and SIGTERM takes the same graceful path.
    """

    def setup(self, **info):
        INTERRUPTED["signal"] = None
        try:
            tune_handler = signal.getsignal(signal.SIGINT)

            def on_signal(signum, frame):
                INTERRUPTED["signal"] = signum
                if callable(tune_handler):
                    tune_handler(signal.SIGINT, frame)
                else:
                    raise KeyboardInterrupt

            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
        except ValueError:  # not the main thread: Tune does not catch signals there either
            pass


class PendingWatch(Callback):
    """Fails the sweep when a trial has waited longer than ``limit_s`` for resources (picklable)."""

    def __init__(self, limit_s: float | None, request: str):
        self.limit_s = limit_s
        self.request = request
        self._since: dict[str, float] = {}

    def on_step_end(self, iteration, trials, **info):
        if not self.limit_s:
            return
        now = time.monotonic()
        for trial in trials:
            if trial.status != "PENDING":
                self._since.pop(trial.trial_id, None)
                continue
            since = self._since.setdefault(trial.trial_id, now)
            if now - since > self.limit_s:
                raise SweepError(
                    f"trial {trial.trial_id} waited over {self.limit_s:g} s (budget.pending_seconds) for "
                    f"{self.request}; the cluster has {describe_resources(ray.available_resources())} free of "
                    f"{describe_resources(ray.cluster_resources())}"
                )

    def __getstate__(self):
        return {"limit_s": self.limit_s, "request": self.request, "_since": {}}
