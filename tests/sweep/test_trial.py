"""Claiming a trial's MLflow child run by its config signature, against a real sqlite tracking store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sepray import names, tracking
from sepray.sweep.trial import claim_child_run, close_orphans

CFG = SimpleNamespace(model_name="waveunet")


@pytest.fixture
def sweep(mlflow_uri):
    tracking.ensure_experiment("claims", mlflow_uri)
    parent = tracking.start_run("claims", run_name="sweep-claims", uri=mlflow_uri)
    return "claims", parent.run_id, mlflow_uri


def test_a_new_signature_gets_a_new_child_and_a_retry_reattaches_it(sweep):
    exp, parent, uri = sweep
    run, owner = claim_child_run(exp, parent, "sig1", "trial-a", uri, CFG)
    assert owner is None and run is not None
    tags = tracking.get_run(run.run_id, uri).data.tags
    assert tags[names.SIGNATURE] == "sig1" and tags[names.TRIAL_ID] == "trial-a"
    assert tags["mlflow.parentRunId"] == parent and tags[names.OUTCOME] == names.RUNNING
    again, owner = claim_child_run(exp, parent, "sig1", "trial-a", uri, CFG)  # the same trial, retried
    assert owner is None and again.run_id == run.run_id
    other, _ = claim_child_run(exp, parent, "sig2", "trial-b", uri, CFG)  # another configuration
    assert other.run_id != run.run_id
    assert len(tracking.child_runs(exp, parent, uri)) == 2


def test_a_finished_configuration_is_reused_not_trained_again(sweep):
    exp, parent, uri = sweep
    run, _ = claim_child_run(exp, parent, "sig1", "trial-a", uri, CFG)
    run.end("FINISHED")
    none, owner = claim_child_run(exp, parent, "sig1", "trial-b", uri, CFG)
    assert none is None and owner.info.run_id == run.run_id
    assert len(tracking.child_runs(exp, parent, uri, signature="sig1")) == 1


def test_a_failed_configuration_is_taken_over_by_the_next_trial(sweep):
    exp, parent, uri = sweep
    run, _ = claim_child_run(exp, parent, "sig1", "trial-a", uri, CFG)
    run.end("FAILED")
    taken, owner = claim_child_run(exp, parent, "sig1", "trial-b", uri, CFG)
    assert owner is None and taken.run_id == run.run_id
    info = tracking.get_run(run.run_id, uri)
    assert info.info.status == "RUNNING"
    assert info.data.tags[names.TRIAL_ID] == "trial-b"
    assert info.data.tags[names.PREVIOUS_TRIAL_ID] == "trial-a"


def test_close_orphans_ends_only_running_children(sweep):
    exp, parent, uri = sweep
    done, _ = claim_child_run(exp, parent, "sig1", "trial-a", uri, CFG)
    done.end("FINISHED")
    claim_child_run(exp, parent, "sig2", "trial-b", uri, CFG)
    assert close_orphans(exp, parent, uri, names.INTERRUPTED) == 1
    by_sig = {r.data.tags[names.SIGNATURE]: r for r in tracking.child_runs(exp, parent, uri)}
    assert by_sig["sig1"].info.status == "FINISHED"
    assert by_sig["sig2"].info.status == "KILLED" and by_sig["sig2"].data.tags[names.OUTCOME] == "interrupted"


class _DivergingTrainer:
    """Stands in for sepray.train.Trainer: the first epoch diverges, as the real one does at lr=1e30."""

    num_parameters = 1
    epoch = 0
    finished = False
    device = "cpu"
    error: BaseException = FloatingPointError("training diverged: loss is nan at step 1")

    def __init__(self, cfg):
        pass

    def baseline_sdr(self):
        return {}

    def train_epoch(self, on_step=None):
        raise self.error

    def close(self):
        pass


@pytest.mark.parametrize("error", ["diverged", "out-of-memory"])
def test_a_diverged_or_out_of_memory_trial_fails_for_good_with_the_reason(sweep, monkeypatch, error):
    import dataclasses
    import math

    import torch

    from sepray import train
    from sepray.sweep.spec import load_spec
    from sepray.sweep.trial import TrialContext, run_trial

    exp, parent, uri = sweep
    if error == "out-of-memory":
        monkeypatch.setattr(_DivergingTrainer, "error", torch.OutOfMemoryError("CUDA out of memory."))
    monkeypatch.setattr(train, "Trainer", _DivergingTrainer)
    spec = load_spec("sweeps/quickstart.yaml", smoke_test=True)
    context = TrialContext.of(spec, uri, parent)
    context = dataclasses.replace(context, experiment=exp)
    reports = []
    run_trial({}, context, "trial-a", lambda metrics, ckpt: reports.append(metrics), node_id="node-1")
    # one last report ends the trial (Ray does not retry it): failed, with the reason, metric NaN
    (last,) = reports
    assert last["failed"] is True and math.isnan(last[spec.metric])
    (child,) = tracking.child_runs(exp, parent, uri)
    assert child.info.status == "FAILED" and child.data.tags[names.OUTCOME] == names.FAILED
    expected = "FloatingPointError: training diverged" if error == "diverged" else "OutOfMemoryError: CUDA"
    assert child.data.tags[names.LAST_ERROR].startswith(expected) and last["error"].startswith(expected)
    assert child.data.tags[names.RAY_NODE_ID] == "node-1" and child.data.tags[names.RAY_NODE_IDS] == "node-1"
