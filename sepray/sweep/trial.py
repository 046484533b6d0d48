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
    base = {"signature": sig, "mlflow_run_id": owner.info.run_id if owner else run.run_id}
    if run is None:  # another trial trained (or is training) this configuration: reuse its results
        replay(owner, metric, start_epoch, base, uri, report)
        return
    info = run.info()
    if info.info.status == "FINISHED":  # this trial finished before a driver crash lost its last report
        replay(info, metric, start_epoch, base, uri, report)
        return
    logged = max((s for s, _ in run.metric_history("epoch")), default=0)  # epochs this run already holds
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
        run.log_params({**cfg.flat(), "num_parameters": trainer.num_parameters})
        run.log_dict(cfg.to_dict(), "run_config.json")
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
    base["owner"] = True
    try:
        while not trainer.finished:
            if trainer.epoch > start_epoch and _stopped(run):
                return  # ASHA stopped this trial and the driver closed its run
            result = {**trainer.train_epoch(), **trainer.validate(), "epoch": trainer.epoch}
            result["train_seconds"] = trainer.train_seconds
            if _stopped(run):
                return  # Tune stopped it during this epoch (the sweep's time limit): its last report is kept
            if trainer.epoch > logged:
                run.log_metrics(result, step=trainer.epoch)
            with tempfile.TemporaryDirectory(prefix="sepray-ckpt-") as tmp:
                trainer.save_checkpoint(tmp)
                state = {"run_id": run.run_id, "signature": sig, "trial_id": trial_id, "epoch": trainer.epoch}
                Path(tmp, TRIAL_FILE).write_text(json.dumps(state))
                outcome = names.RUNNING  # for Tune's progress table
                if trainer.finished:
                    outcome = names.CUT_BY_TIME if trainer.cut_by_time else names.FINISHED
                    finish_child_run(run, trainer, sweep, names.TRIAL_LIMIT if trainer.cut_by_time else None)
                report({**result, **base, "done_epochs": trainer.epoch, "outcome": outcome}, Path(tmp))
    except _deterministic_failures() as exc:
        fail_for_good(run, exc, trainer.epoch, metric, base, report)
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            run.set_tags({names.LAST_ERROR: error_text(exc)})
        raise


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
            "failed": True,
            "error": reason,
            "epoch": epoch,
            "done_epochs": epoch,
            "outcome": names.FAILED,
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
        "reused": True,
        "owner_trial_id": owner.data.tags.get(names.TRIAL_ID, ""),
        "owner": False,
        "outcome": "reused",
    }
    if not history:
        report({metric: float("nan"), "epoch": 0, **base, **extra}, None)
        return
    for step in sorted(history):
        if step > start_epoch:
            report({metric: history[step], "epoch": step, "done_epochs": step, **base, **extra}, None)


def finish_child_run(run: tracking.Run, trainer, sweep: TrialContext, cut_by: str | None = None) -> None:
    """Log the model package, an audio excerpt and spectrograms, then mark the run FINISHED: outcome
    ``finished``, or ``cut_by_time`` when the limit ``cut_by`` (:data:`names.SWEEP_LIMIT` / ``TRIAL_LIMIT``)
    ended it before its budget of epochs (the package is then the model of its last completed epoch)."""
    from sepray.train import log_package

    log_package(run, trainer)
    try:
        log_excerpt(run, trainer, sweep.excerpt_seconds)
    except Exception as exc:  # an excerpt is for people to listen to; it must not fail the trial
        run.set_tags({names.EXCERPT_ERROR: f"{type(exc).__name__}: {exc}"[:500]})
    # one point per completion (tests count them); a trial killed after this point but before Tune saved its
    # result is retrained from its previous checkpoint and comes here again: it is still one completion
    if cut_by is None and not run.metric_history("completed"):
        run.log_metrics({"completed": 1.0}, step=trainer.epoch)
    tags = {
        names.OUTCOME: names.CUT_BY_TIME if cut_by else names.FINISHED,
        names.EPOCHS: trainer.epoch,
        names.TRAIN_SECONDS: round(trainer.train_seconds, 1),
    }
    if cut_by:
        tags[names.CUT_BY] = cut_by
    run.set_tags(tags)
    run.end("FINISHED")


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
