"""Ray Tune's side of a sweep: the trainable (:func:`train_trial`) and the ``tune.Tuner`` of a spec.

Optuna (TPE, or its random sampler) with the define-by-run conditional space inside a ConcurrencyLimiter, or a
grid; ASHA on the validation metric; FailureConfig / CheckpointConfig; the callbacks of
:mod:`.callbacks`; the live progress table; :func:`fit` runs or restores it. The trainable is an importable
function; its body, :func:`sepray.sweep.trial.run_trial`, takes the report and checkpoint functions as arguments
so that tests call it without Ray.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from sepray import names
from sepray.errors import SweepError
from sepray.sweep.cut import keep_cut_model
from sepray.sweep.raytune.callbacks import (
    ChildRunCloser,
    InterruptWatch,
    PendingWatch,
    StateSnapshot,
    cut_by_time,
)
from sepray.sweep.raytune.cluster import TrialResources, describe_requests
from sepray.sweep.raytune.faults import StorageWatch, check_storage_error
from sepray.sweep.space import GRID_KEY, grid_points
from sepray.sweep.spec import SweepSpec
from sepray.sweep.trial import TrialContext, run_trial

# ----------------------------------------------------------------------------------------------------------
# naming trials


class TrialNamer:
    """Names a trial (and its folder) by its config signature plus Ray's trial id (picklable)."""

    def __init__(self, sweep: TrialContext):
        self.sweep = sweep

    def __call__(self, trial) -> str:
        try:
            sig = self.sweep.trial_config(trial.config).signature()
        except Exception:
            sig = "invalid"
        return f"{sig}_{trial.trial_id}"


# ----------------------------------------------------------------------------------------------------------
# the trainable


def train_trial(config: dict[str, Any], sweep: TrialContext) -> None:
    """Ray Tune function trainable: resume from ``tune.get_checkpoint()``, train, ``tune.report`` per epoch."""
    trial_id = tune.get_context().get_trial_id()
    node_id = ray.get_runtime_context().get_node_id()  # recorded on the child run (ray-free trial body)

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        try:
            tune.report(metrics, checkpoint=checkpoint)  # copies the checkpoint to the sweep's storage
        except OSError as exc:
            check_storage_error(exc, metrics.get(names.EPOCH))
            raise

    checkpoint = tune.get_checkpoint()
    with tempfile.TemporaryDirectory(prefix="sepray-resume-") as tmp:
        resume_dir = None
        if checkpoint is not None:
            resume_dir = Path(checkpoint.to_directory(tmp))
        run_trial(config, sweep, trial_id, report, resume_dir, node_id=node_id)


def build_tuner_parts(spec: SweepSpec, sweep: TrialContext) -> dict[str, Any]:
    """The trainable, param space, TuneConfig and RunConfig of a sweep (also used by tests)."""
    import optuna

    # each trial asks for its model family's resources (resources.per_family), else the spec's
    trainable = tune.with_resources(tune.with_parameters(train_trial, sweep=sweep), TrialResources(spec))
    search_alg = None
    param_space: dict[str, Any] = {}
    max_concurrent_trials = None
    if spec.search.algorithm == "grid":
        param_space = {GRID_KEY: tune.grid_search(grid_points(spec.params, spec.fixed, spec.families))}
        max_concurrent_trials = spec.search.max_concurrent
        num_samples = 1
    else:
        if spec.search.algorithm == "random":
            sampler = optuna.samplers.RandomSampler(seed=spec.search.seed)
        else:
            kwargs = (
                {} if spec.search.startup_trials is None else {"n_startup_trials": spec.search.startup_trials}
            )
            sampler = optuna.samplers.TPESampler(seed=spec.search.seed, **kwargs)
        searcher = OptunaSearch(space=spec.space(), metric=spec.metric, mode=spec.mode, sampler=sampler)
        search_alg = ConcurrencyLimiter(searcher, max_concurrent=spec.search.max_concurrent)
        num_samples = spec.num_samples
    scheduler = None
    if spec.scheduler.type == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric=spec.metric,
            mode=spec.mode,
            max_t=spec.epochs,
            grace_period=min(spec.scheduler.grace_period, spec.epochs),
            reduction_factor=spec.scheduler.reduction_factor,
        )
    namer = TrialNamer(sweep)
    callbacks: list[Callback] = [
        ChildRunCloser(spec.name, sweep.parent_run_id, sweep.uri),
        InterruptWatch(),
        PendingWatch(spec.budget.pending_seconds, describe_requests(spec)),
        StorageWatch(spec.storage_path()),
    ]
    exp_dir = spec.experiment_dir()
    if exp_dir is not None:
        callbacks.append(StateSnapshot(str(exp_dir)))
    tune_config = tune.TuneConfig(
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=max_concurrent_trials,
        time_budget_s=spec.budget.sweep_seconds,
        reuse_actors=True,  # a finished trial's worker takes the next one: no second torch / mlflow import
        trial_name_creator=namer,
        trial_dirname_creator=namer,
    )
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=spec.storage_path(),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=spec.keep_checkpoints,
            checkpoint_score_attribute=spec.metric,
            checkpoint_score_order=spec.mode,
        ),
        callbacks=callbacks,
        progress_reporter=progress_reporter(spec),
        verbose=1,
    )
    return {
        "trainable": trainable,
        "param_space": param_space,
        "tune_config": tune_config,
        "run_config": run_config,
    }


def progress_reporter(spec: SweepSpec) -> tune.CLIReporter:
    """Tune's live table: the spec's metric, validation SDR per source, epoch, outcome, the searched values.

    Ray 2.60's default ("new") output engine ignores a reporter and shows the first four reported keys; the
    driver sets ``RAY_AIR_NEW_OUTPUT=0`` so this one is used.
    """
    from sepray import SOURCES

    columns = {spec.metric: spec.metric}
    columns.update({names.sdr_metric("valid", s): f"valid {s}" for s in SOURCES})
    columns.update({names.EPOCH: "epoch", names.RESULT_OUTCOME: "outcome"})
    return tune.CLIReporter(
        metric_columns=columns,
        parameter_columns=_parameter_columns(spec),
        metric=spec.metric,
        mode=spec.mode,
        max_report_frequency=30,
    )


def _parameter_columns(spec: SweepSpec) -> dict[str, str]:
    """The searched values every trial's config holds (Tune's table looks each one up in every trial): the
    grid point, or the parameters without a ``when`` condition."""
    if spec.search.algorithm == "grid":
        return {GRID_KEY: "grid point"}
    return {p.key: p.key.rsplit(".", 1)[-1] for p in spec.params if not p.when}


def fit(spec: SweepSpec, sweep: TrialContext, resume: bool, log=print):
    """Run the sweep's Tuner (restored from its experiment folder when ``resume``); Tune's ResultGrid."""
    parts = build_tuner_parts(spec, sweep)
    path = f"{spec.storage_path().rstrip('/')}/{spec.name}"
    if resume and not tune.Tuner.can_restore(path):
        log(f"{path}: Tune had not saved its state yet; starting the trials again under the same parent run")
        resume = False
    if resume:
        tuner = tune.Tuner.restore(
            path,
            trainable=parts["trainable"],
            param_space=parts["param_space"] or None,
            resume_unfinished=True,
            resume_errored=True,
        )
    else:
        tuner = tune.Tuner(
            parts["trainable"],
            param_space=parts["param_space"],
            tune_config=parts["tune_config"],
            run_config=parts["run_config"],
        )
    try:
        return tuner.fit()
    except (pickle.UnpicklingError, EOFError) as exc:  # a trial's error file cut off in the storage
        raise SweepError(
            f"{path}: Tune could not read back a trial's error ({exc}); is the sweep's storage full?"
        ) from None


def keep_cut_trials(results, sweep: TrialContext, log=print) -> list[str]:
    """After Tune is done (not interrupted): every trial the sweep's time limit cut -- it ended without an error
    and without ``done`` (see :class:`ChildRunCloser`) -- keeps the model of its latest checkpoint, fetched
    through Tune's Checkpoint API (local or remote storage; CheckpointConfig always keeps the latest one).
    Their trial processes are gone by now. Returns the run ids that were given a model or closed."""
    kept = []
    for result in results:
        if result.error is not None or not cut_by_time(result.metrics):
            continue
        trial_id = result.metrics.get("trial_id", "")
        with tempfile.TemporaryDirectory(prefix="sepray-cut-") as tmp:
            checkpoint_dir = Path(result.checkpoint.to_directory(tmp)) if result.checkpoint else None
            run_id = keep_cut_model(sweep, trial_id, checkpoint_dir, log)
        if run_id:
            kept.append(run_id)
    return kept
