"""Trials cut by a time limit keep the model of their last completed epoch (the trial body and the driver's
side, without Ray; a real sqlite MLflow store, real training of tiny Wave-U-Nets on the smoke corpus).

* ``budget.trial_seconds``: the trial ends itself after the epoch that passes it, as ``cut_by_time``.
* ``budget.sweep_seconds``: Tune stops the trial where it stands; the driver marks its run (as
  ``ChildRunCloser.on_step_end`` does), the trial sees that and logs nothing more, and after Tune the driver
  gives the run the model of the trial's latest checkpoint (:func:`sepray.sweep.cut.keep_cut_model`).
The real sweep with Ray: tests/integration/test_sweep_time_cut.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sepray import names, tracking
from sepray.package import load_package
from sepray.sweep.cut import keep_cut_model
from sepray.sweep.driver import prepare_data
from sepray.sweep.leaderboard import collect_rows, has_model
from sepray.sweep.parent import start_parent_run
from sepray.sweep.spec import load_spec
from sepray.sweep.trial import TrialContext, run_trial

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "sweeps" / "quickstart.yaml"
CONFIG = {"model.levels": 2, "model.channels": 4, "model.upsampling": "linear", "train.lr": 1e-3}


def _sweep(tmp_path, monkeypatch, *overrides):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_spec(SPEC, ["budget.epochs=3", *overrides], smoke_test=True)
    tracking.ensure_experiment(spec.name, uri)
    parent = start_parent_run(spec, uri, None)
    prepare_data(spec)
    return spec, TrialContext.of(spec, uri, parent.run_id)


def _package_loads(run_id: str, uri: str, tmp_path: Path) -> None:
    model, info = load_package(tracking.download_package(run_id, tmp_path / f"pkg-{run_id}", uri))
    assert info.model == "waveunet" and sum(p.numel() for p in model.parameters()) > 0


def test_trial_seconds_cuts_a_trial_that_keeps_its_last_epoch(tmp_path, monkeypatch):
    spec, sweep = _sweep(tmp_path, monkeypatch, "budget.trial_seconds=0.001")  # passed by the first epoch
    reports = []
    run_trial(CONFIG, sweep, "trial-a", lambda m, d=None: reports.append((m, d is not None)))
    assert [(m["epoch"], m["outcome"], ckpt) for m, ckpt in reports] == [(1, names.CUT_BY_TIME, True)]
    (child,) = tracking.child_runs(spec.name, sweep.parent_run_id, sweep.uri)
    tags = child.data.tags
    assert child.info.status == "FINISHED" and tags[names.OUTCOME] == names.CUT_BY_TIME
    assert tags[names.CUT_BY] == names.TRIAL_LIMIT and tags[names.EPOCHS] == "1"
    assert "completed" not in child.data.metrics  # it did not complete its budget
    files = set(tracking.list_artifact_files(child.info.run_id, "", sweep.uri))
    assert {"run_config.json", "excerpt/spectrograms.png"} <= files, files
    _package_loads(child.info.run_id, sweep.uri, tmp_path)
    (row,) = collect_rows(spec, sweep.parent_run_id, sweep.uri)
    assert has_model(row) and row["epochs"] == 1 and row["reason"] == names.TRIAL_LIMIT


def test_the_driver_keeps_the_model_of_the_last_checkpoint_tune_recorded(tmp_path, monkeypatch):
    """Tune cut the trial while it was logging epoch 2 (its checkpoint never reached Tune): the run keeps the
    model of epoch 1, and its leaderboard row shows epoch 1's values, not epoch 2's."""
    spec, sweep = _sweep(tmp_path, monkeypatch)
    kept = tmp_path / "latest-checkpoint"  # what Tune recorded last: epoch 1
    valid = {}

    def report(metrics, checkpoint_dir=None):
        valid[metrics["epoch"]] = metrics[spec.metric]
        if metrics["epoch"] == 1:
            shutil.copytree(checkpoint_dir, kept)
        else:  # the driver closes the run as Tune cuts the trial (ChildRunCloser.on_step_end)
            run = tracking.Run(metrics["mlflow_run_id"], sweep.uri)
            run.set_tags({names.OUTCOME: names.CUT_BY_TIME, names.CUT_BY: names.SWEEP_LIMIT})
            run.end("KILLED")

    run_trial(CONFIG, sweep, "trial-a", report)
    assert sorted(valid) == [1, 2]  # it saw the closed run before epoch 3 and ended
    (child,) = tracking.child_runs(spec.name, sweep.parent_run_id, sweep.uri)
    assert child.data.metrics["epoch"] == 2
    logs = []
    assert keep_cut_model(sweep, "trial-a", kept, logs.append) == child.info.run_id
    assert "keeps its model of epoch 1" in logs[0]
    info = tracking.get_run(child.info.run_id, sweep.uri)
    assert info.info.status == "FINISHED" and info.data.tags[names.OUTCOME] == names.CUT_BY_TIME
    assert info.data.tags[names.CUT_BY] == names.SWEEP_LIMIT and info.data.tags[names.EPOCHS] == "1"
    files = set(tracking.list_artifact_files(child.info.run_id, "", sweep.uri))
    assert {"run_config.json", "excerpt/mixture.wav", "excerpt/vocals_estimate.wav"} <= files, files
    _package_loads(child.info.run_id, sweep.uri, tmp_path)
    (row,) = collect_rows(spec, sweep.parent_run_id, sweep.uri)
    assert has_model(row) and row["epochs"] == 1 and row["reason"] == names.SWEEP_LIMIT
    assert row[spec.metric] == pytest.approx(valid[1]) and valid[1] != valid[2]
    # again (a --resume after the driver died before the test stage): nothing changes
    assert keep_cut_model(sweep, "trial-a", kept, logs.append) is None

    # a trial cut before its first epoch ended has no checkpoint, so no model; one that never started, no run
    run = tracking.start_run(
        spec.name, tags={names.TRIAL_ID: "trial-z", names.KIND: "trial"}, parent_run_id=sweep.parent_run_id,
        uri=sweep.uri,
    )  # fmt: skip
    assert keep_cut_model(sweep, "trial-z", None, logs.append) == run.run_id
    assert keep_cut_model(sweep, "never-started", None, logs.append) is None
    empty = next(r for r in collect_rows(spec, sweep.parent_run_id, sweep.uri) if r["run_id"] == run.run_id)
    assert empty["outcome"] == names.CUT_BY_TIME and empty["status"] == "KILLED" and not has_model(empty)


def test_a_sweep_where_no_trial_completed_an_epoch_says_why_and_exits_1(tmp_path, monkeypatch, capsys):
    from sepray.cli import main
    from sepray.sweep import driver
    from sepray.sweep.leaderboard import finish_sweep

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_spec(SPEC, smoke_test=True)
    tracking.ensure_experiment(spec.name, uri)
    parent = start_parent_run(spec, uri, None)
    for trial_id in ("a", "b"):  # what keep_cut_model leaves of trials cut before their first epoch ended
        run = tracking.start_run(
            spec.name, tags={names.TRIAL_ID: trial_id}, parent_run_id=parent.run_id, uri=uri
        )
        run.set_tags({names.OUTCOME: names.CUT_BY_TIME, names.CUT_BY: names.SWEEP_LIMIT, names.EPOCHS: 0})
        run.end("KILLED")
    outcome = finish_sweep(spec, parent, uri, log=lambda *_: None)
    reason = "no trial completed an epoch (trials (one per configuration): 2 cut_by_time)"
    assert outcome["best_run_id"] is None and outcome["no_best_reason"] == reason
    tags = parent.info().data.tags
    assert tags[names.BEST_RUN_ID] == "none" and tags[names.NO_BEST_REASON] == reason
    monkeypatch.setattr(driver, "run_sweep", lambda *args, **kwargs: outcome)  # the command's last step
    capsys.readouterr()  # MLflow's own log lines so far
    assert main(["sweep", str(SPEC)]) == 1
    assert capsys.readouterr().err.strip() == f"sepray: error: {SPEC}: no best model: {reason}"
