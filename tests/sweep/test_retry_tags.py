"""Every restart Ray made of a trial ends up on its MLflow run (``sepray.retries``, ``sepray.last_error``), even
when the driver's recovery callback could not tag it at the time (a real sqlite store; the trials are stand-ins
with the attributes of Ray's ``Trial`` that the callback reads). The real restart, a node killed under a running
sweep: tests/integration/test_sweep_faults.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sepray import names, tracking
from sepray.sweep.raytune.callbacks import ChildRunCloser


@dataclass
class _Trial:
    trial_id: str
    num_failures: int
    error_file: str
    status: str = "TERMINATED"


def _setup(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment("retries", uri)
    parent = tracking.start_run("retries", tags={names.KIND: "sweep"}, uri=uri)
    return uri, parent.run_id


def _child(uri: str, parent: str, trial_id: str) -> str:
    run = tracking.start_run(
        "retries", tags={names.TRIAL_ID: trial_id, names.KIND: "trial"}, parent_run_id=parent, uri=uri
    )
    return run.run_id


def _error_file(tmp_path: Path, message: str) -> str:
    path = tmp_path / f"{message[:8]}.txt"
    path.write_text(f"Failure # 1 (occurred at 2026-12-03)\nTraceback (most recent call last):\n{message}\n")
    return str(path)


def test_a_restart_tagged_late_or_never_seen_is_on_its_run_after_the_sweep(tmp_path):
    uri, parent = _setup(tmp_path)
    closer = ChildRunCloser("retries", parent, uri)
    died = "ray.exceptions.ActorDiedError: The actor died because its node has died."
    early = _Trial("early", 1, _error_file(tmp_path, died))
    closer.on_trial_recover(0, [], early)  # its run does not exist yet: nothing to tag now
    early_run = _child(uri, parent, "early")
    unseen = _Trial("unseen", 2, _error_file(tmp_path, "RuntimeError: worker crashed"))
    unseen_run = _child(uri, parent, "unseen")  # Tune counted 2 failures; no recovery callback reached us
    failed = _Trial("failed", 3, _error_file(tmp_path, "ValueError: diverged"), status="ERROR")
    failed_run = _child(uri, parent, "failed")
    healthy_run = _child(uri, parent, "healthy")
    trials = [early, unseen, failed, _Trial("healthy", 0, "")]

    closer.on_experiment_end(trials)

    tags = {
        run_id: tracking.get_run(run_id, uri).data.tags for run_id in (early_run, unseen_run, healthy_run)
    }
    assert tags[early_run][names.RETRIES] == "1"
    assert tags[early_run][names.LAST_ERROR] == died.replace("ray.exceptions.", "")
    assert tags[unseen_run][names.RETRIES] == "2"
    assert tags[unseen_run][names.LAST_ERROR] == "RuntimeError: worker crashed"
    assert names.RETRIES not in tags[healthy_run]
    # a trial that failed for good is the closing path's to tag (on_trial_error), not this one's
    assert names.RETRIES not in tracking.get_run(failed_run, uri).data.tags


def test_a_restart_already_on_its_run_is_not_tagged_again(tmp_path):
    uri, parent = _setup(tmp_path)
    closer = ChildRunCloser("retries", parent, uri)
    run_id = _child(uri, parent, "moved")
    trial = _Trial("moved", 1, _error_file(tmp_path, "ray.exceptions.ActorDiedError: node died"))
    closer.on_trial_recover(0, [], trial)
    assert tracking.get_run(run_id, uri).data.tags[names.RETRIES] == "1"
    tracking.Run(run_id, uri).set_tags({names.LAST_ERROR: "marker"})
    closer.on_experiment_end([trial])
    assert tracking.get_run(run_id, uri).data.tags[names.LAST_ERROR] == "marker"  # left alone
    trial.num_failures = 2  # restarted once more, without a callback this object saw
    closer.on_experiment_end([trial])
    tags = tracking.get_run(run_id, uri).data.tags
    assert tags[names.RETRIES] == "2" and tags[names.LAST_ERROR] == "ActorDiedError: node died"
