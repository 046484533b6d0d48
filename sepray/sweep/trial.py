"""The ray-free side of a sweep trial: its MLflow child run (claim, replay, finish, close) and its body.

The Ray trainable (:func:`sepray.sweep.raytune.tuner.train_trial`) calls :func:`run_trial` with Tune's report function and
checkpoint folder; tests call it directly with their own. Each trial:

* resolves its config; the config signature names it (``RunConfig.signature()``);
* claims the MLflow child run tagged with that signature under the parent: its own (reattached on a retry or
  resume), a new one, or -- when another trial already trained the same configuration -- none: it replays
  that trial's per-epoch results instead of training the configuration twice;
* trains epoch by epoch, logging metrics and reporting ``metric`` with a checkpoint after every epoch, and
  finishes the child run (model package, audio excerpt, spectrograms) *before* its last report, because code
  after a report may never run once ASHA stops the trial.

Child runs left RUNNING (ASHA stopped the trial, the driver was killed) are closed by :func:`close_orphans`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepray import names, tracking
from sepray.config import RunConfig, resolve
from sepray.epochs import EpochHooks, finished_outcome, run_epochs
from sepray.errors import error_text
from sepray.sweep.excerpt import log_excerpt
from sepray.sweep.naming import trial_run_name
from sepray.sweep.space import GRID_KEY, trial_raw_config
from sepray.sweep.spec import SweepSpec

TRIAL_FILE = "sepray_trial.json"  # in each checkpoint: the MLflow run it belongs to
WAIT_POLL_S = 5.0  # a trial whose configuration another live trial is training polls this often
WAIT_LIMIT_S = 6 * 3600.0


# ----------------------------------------------------------------------------------------------------------
# what every trial gets


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep gets (through ``tune.with_parameters``): where to log, what to train."""

    experiment: str  # the sweep's name = its MLflow experiment
    uri: str  # tracking URI as the trials see it
    parent_run_id: str
    fixed: dict[str, Any]  # the spec's fixed {data, model, train} sections, budget applied
    families: dict[str, dict[str, Any]]
    metric: str
    mode: str
    epochs: int
    excerpt_seconds: float
    label: str  # the spec file, for messages
    family_threads: dict[str, int | None] = field(default_factory=dict)  # SweepSpec.family_threads

    @classmethod
    def of(cls, spec: SweepSpec, uri: str, parent_run_id: str) -> TrialContext:
        return cls(
            experiment=spec.name,
            uri=uri,
            parent_run_id=parent_run_id,
            fixed=spec.fixed,
            families=spec.families,
            metric=spec.metric,
            mode=spec.mode,
            epochs=spec.epochs,
            excerpt_seconds=spec.excerpt_seconds,
            label=spec.label,
            family_threads=spec.family_threads,
        )

    def trial_config(self, config: dict[str, Any]) -> RunConfig:
        """The resolved run config of a trial from Tune's config (sampled values or a grid point)."""
        sampled = sampled_params(config)
        raw = trial_raw_config(self.fixed, self.families, sampled, self.family_threads)
        return resolve(raw, f"{self.label}: {sampled}")


def sampled_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled values: Optuna's flat dotted dict, or the grid point."""
    return dict(config.get(GRID_KEY, config))


# ----------------------------------------------------------------------------------------------------------
# the trial body


def run_trial(
    config: dict[str, Any],
    sweep: TrialContext,
    trial_id: str,
    report: Callable[[dict[str, Any], Path | None], None],
    resume_dir: Path | None = None,
    node_id: str | None = None,
) -> None:
    """Train (or reuse) one configuration; ``report(metrics, checkpoint_dir)`` once per epoch.

    ``node_id`` (the Ray node this attempt runs on) is recorded on the child run. A trial that diverges or runs
    out of memory fails for good at once (see :func:`_deterministic_failures`): its run ends FAILED with the
    reason, and a last report with ``failed: true`` ends the trial without a retry. Any other error is raised,
    and Ray retries the trial from its last checkpoint (``max_failures``).
    """
    from sepray.train import CHECKPOINT_FILE, Trainer

    cfg = sweep.trial_config(config)
    sig = cfg.signature()
    uri, exp, parent = sweep.uri, sweep.experiment, sweep.parent_run_id
    metric = sweep.metric
    start_epoch = 0
    if resume_dir is not None and (resume_dir / TRIAL_FILE).is_file():
        start_epoch = int(json.loads((resume_dir / TRIAL_FILE).read_text()).get("epoch", 0))

    run, owner = claim_child_run(exp, parent, sig, trial_id, uri, cfg)
    base = {names.RESULT_SIGNATURE: sig, names.RESULT_RUN_ID: owner.info.run_id if owner else run.run_id}
    if run is None:  # another trial trained (or is training) this configuration: reuse its results
        replay(owner, metric, start_epoch, base, uri, report)
        return
    info = run.info()
    if info.info.status == "FINISHED":  # this trial finished before a driver crash lost its last report
        replay(info, metric, start_epoch, base, uri, report)
        return
    logged = max((s for s, _ in run.metric_history(names.EPOCH)), default=0)  # epochs this run already holds
    if node_id:
        nodes = [n for n in info.data.tags.get(names.RAY_NODE_IDS, "").split(",") if n]
        if not nodes or nodes[-1] != node_id:
            nodes.append(node_id)
        run.set_tags({names.RAY_NODE_ID: node_id, names.RAY_NODE_IDS: ",".join(nodes)})

    try:
        trainer = Trainer(cfg)
    except _deterministic_failures() as exc:  # e.g. the model does not fit in memory
        fail_for_good(run, exc, 0, metric, base, report)
        return
    if resume_dir is not None and (resume_dir / CHECKPOINT_FILE).is_file():
        trainer.load_checkpoint(resume_dir)
    if not info.data.params:
        run.log_params({**cfg.flat(), names.NUM_PARAMETERS_PARAM: trainer.num_parameters})
        run.log_dict(cfg.to_dict(), names.RUN_CONFIG)
        run.log_metrics(trainer.baseline_sdr(), step=0)
    run.set_tags(
        {
            names.MODEL: cfg.model_name,
            names.NUM_PARAMETERS: trainer.num_parameters,
            names.SAMPLED: json.dumps(sampled_params(config), sort_keys=True),  # the active searched values
            names.RUN_NAME: trial_run_name(cfg.model_name, sampled_params(config)),
            names.CUDA_VISIBLE_DEVICES: os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),  # set by Ray
            names.TRAIN_DEVICE: str(trainer.device),
        }
    )
    base[names.RESULT_OWNER] = True
    run_epochs(trainer, _TrialHooks(run, sweep, trial_id, start_epoch, logged, base, report))


class _TrialHooks(EpochHooks):
    """A sweep trial's side of the epoch loop (:func:`sepray.epochs.run_epochs`): metrics into its child run, each
    epoch's checkpoint (+ :data:`TRIAL_FILE`) in a temporary folder that ``report`` hands to Tune, the child run
    finished before the last report. A run the driver closed (ASHA stopped the trial, or the sweep's time limit
    cut it) stops the loop; so does a deterministic failure (:func:`fail_for_good`)."""

    def __init__(self, run, sweep: TrialContext, trial_id: str, start_epoch: int, logged: int, base, report):
        self.run, self.sweep, self.trial_id, self.base, self.tune_report = run, sweep, trial_id, base, report
        self.start_epoch = start_epoch  # the epoch this attempt resumed at
        self.logged = logged  # epochs whose metrics the run holds already (an attempt before this one)

    def should_stop(self, trainer) -> bool:
        # the first epoch of an attempt starts without asking: its run was just claimed (outcome running)
        return trainer.epoch > self.start_epoch and _stopped(self.run)

    def on_epoch(self, result, trainer) -> None:
        if trainer.epoch > self.logged:
            self.run.log_metrics(result, step=trainer.epoch)

    def checkpoint_dir(self, trainer):
        return tempfile.TemporaryDirectory(prefix="sepray-ckpt-")

    def on_finish(self, result, trainer) -> None:
        finish_child_run(self.run, trainer, self.sweep, names.TRIAL_LIMIT if trainer.cut_by_time else None)

    def report(self, result, trainer, checkpoint_dir: Path) -> None:
        state = {
            "run_id": self.run.run_id,
            "signature": self.base[names.RESULT_SIGNATURE],
            "trial_id": self.trial_id,
            "epoch": trainer.epoch,
        }
        (checkpoint_dir / TRIAL_FILE).write_text(json.dumps(state))
        # the outcome, for Tune's progress table
        outcome = finished_outcome(trainer) if trainer.finished else names.RUNNING
        extra = {names.RESULT_DONE_EPOCHS: trainer.epoch, names.RESULT_OUTCOME: outcome}
        self.tune_report({**result, **self.base, **extra}, checkpoint_dir)

    def on_error(self, exc: BaseException, trainer) -> bool:
        if isinstance(exc, _deterministic_failures()):
            fail_for_good(self.run, exc, trainer.epoch, self.sweep.metric, self.base, self.tune_report)
            return True
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self.run.set_tags({names.LAST_ERROR: error_text(exc)})
        return False


def _deterministic_failures() -> tuple[type[BaseException], ...]:
    """Errors that the same configuration would hit again on a retry: divergence (the Trainer raises
    FloatingPointError on a non-finite loss) and running out of memory (host or GPU)."""
    import torch

    return (FloatingPointError, MemoryError, torch.OutOfMemoryError)


def fail_for_good(run: tracking.Run, exc: BaseException, epoch: int, metric: str, base: dict, report) -> None:
    """End the run FAILED with the reason, then end the trial with a last ``failed`` report (no retry: Ray's
    FailureConfig retries every exception alike, and this one would come back on every retry)."""
    reason = error_text(exc)
    run.set_tags({names.OUTCOME: names.FAILED, names.LAST_ERROR: reason, names.EPOCHS: epoch})
    run.end("FAILED")
    report(
        {
            metric: float("nan"),
            names.RESULT_FAILED: True,
            names.RESULT_ERROR: reason,
            names.EPOCH: epoch,
            names.RESULT_DONE_EPOCHS: epoch,
            names.RESULT_OUTCOME: names.FAILED,
            **base,
        },
        None,
    )


def _stopped(run: tracking.Run) -> bool:
    """The driver closed this run: ASHA stopped the trial, or the sweep's time limit cut it."""
    info = run.info()
    outcome = info.data.tags.get(names.OUTCOME)
    return info.info.status != "RUNNING" and outcome in (names.STOPPED_EARLY, names.CUT_BY_TIME)


def claim_child_run(exp: str, parent: str, sig: str, trial_id: str, uri: str, cfg) -> tuple[Any, Any]:
    """Find or create this configuration's child run -> (Run to train into, None) or (None, owner's run).

    * a child this trial created (a retry or a resumed sweep): reattach it;
    * a child of another trial that finished or was stopped early: reuse it (no second training);
    * a child of another trial that is still running: wait for it, then reuse it;
    * a child whose trial failed or was interrupted for good: take it over and train;
    * none: create one, then check that no concurrent trial created the same one first (oldest wins).
    """
    waited = 0.0
    while True:
        kids = tracking.child_runs(exp, parent, uri, signature=sig)
        mine = [k for k in kids if k.data.tags.get(names.TRIAL_ID) == trial_id]
        if mine:
            run = tracking.attach_run(mine[0].info.run_id, uri, reopen=mine[0].info.status != "FINISHED")
            if mine[0].info.status != "FINISHED":
                run.set_tags({names.OUTCOME: names.RUNNING})
            return run, None
        if kids:
            owner = kids[0]
            status, outcome = owner.info.status, owner.data.tags.get(names.OUTCOME)
            if status == "FINISHED" or (status == "KILLED" and outcome == names.STOPPED_EARLY):
                return None, owner
            if status == "RUNNING" and waited < WAIT_LIMIT_S:
                time.sleep(WAIT_POLL_S)
                waited += WAIT_POLL_S
                continue
            run = tracking.attach_run(owner.info.run_id, uri, reopen=True)  # failed or interrupted: take over
            run.set_tags(
                {
                    names.TRIAL_ID: trial_id,
                    names.PREVIOUS_TRIAL_ID: owner.data.tags.get(names.TRIAL_ID),
                    names.OUTCOME: names.RUNNING,
                }
            )
            return run, None
        run = tracking.start_run(
            exp,
            run_name=f"{cfg.model_name}-{sig}",
            tags={
                names.SIGNATURE: sig,
                names.TRIAL_ID: trial_id,
                names.KIND: "trial",
                names.MODEL: cfg.model_name,
                names.OUTCOME: names.RUNNING,
            },
            parent_run_id=parent,
            uri=uri,
        )
        kids = tracking.child_runs(exp, parent, uri, signature=sig)
        if kids and kids[0].info.run_id != run.run_id:  # a concurrent trial created it first
            tracking.delete_run(run.run_id, uri)
            continue
        return run, None


def replay(owner, metric: str, start_epoch: int, base: dict[str, Any], uri: str, report) -> None:
    """Report another run's per-epoch ``metric`` (epochs after ``start_epoch``) as this trial's results."""
    run = tracking.Run(owner.info.run_id, uri)
    history: dict[int, float] = {}
    for step, value in run.metric_history(metric):
        if step >= 1:
            history[step] = value
    extra = {
        names.RESULT_REUSED: True,
        names.RESULT_OWNER_TRIAL: owner.data.tags.get(names.TRIAL_ID, ""),
        names.RESULT_OWNER: False,
        names.RESULT_OUTCOME: names.REUSED,
    }
    if not history:
        report({metric: float("nan"), names.EPOCH: 0, **base, **extra}, None)
        return
    for step in sorted(history):
        if step > start_epoch:
            epoch = {names.EPOCH: step, names.RESULT_DONE_EPOCHS: step}
            report({metric: history[step], **epoch, **base, **extra}, None)


def finish_child_run(run: tracking.Run, trainer, sweep: TrialContext, cut_by: str | None = None) -> None:
    """Log the model package, an audio excerpt and spectrograms, then mark the run FINISHED: outcome
    ``finished``, or ``cut_by_time`` when the limit ``cut_by`` (:data:`names.SWEEP_LIMIT` / ``TRIAL_LIMIT``)
    ended it before its budget of epochs (the package is then the model of its last completed epoch)."""
    from sepray.train import end_trained_run, log_package

    log_package(run, trainer)
    try:
        log_excerpt(run, trainer, sweep.excerpt_seconds)
    except Exception as exc:  # an excerpt is for people to listen to; it must not fail the trial
        run.set_tags({names.EXCERPT_ERROR: f"{type(exc).__name__}: {exc}"[:500]})
    # one point per completion (tests count them); a trial killed after this point but before Tune saved its
    # result is retrained from its previous checkpoint and comes here again: it is still one completion
    if cut_by is None and not run.metric_history(names.COMPLETED):
        run.log_metrics({names.COMPLETED: 1.0}, step=trainer.epoch)
    end_trained_run(run, trainer, cut_by)


# ----------------------------------------------------------------------------------------------------------
# the driver side


def close_orphans(experiment: str, parent_run_id: str, uri: str, outcome: str, status: str = "KILLED") -> int:
    """Close child runs still RUNNING (no trial is alive to finish them); returns how many."""
    count = 0
    for r in tracking.child_runs(experiment, parent_run_id, uri):
        if r.info.status == "RUNNING":
            run = tracking.Run(r.info.run_id, uri)
            run.set_tags({names.OUTCOME: outcome})
            run.end(status)
            count += 1
    return count
