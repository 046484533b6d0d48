"""The only module that imports ray: run a sweep spec on Ray Tune, one MLflow child run per configuration.

``run_sweep`` (called by ``sweeps/run.py``) validates the spec, creates the MLflow experiment and the sweep's
parent run, starts or joins Ray, and runs a ``tune.Tuner``: Optuna (TPE, or its random sampler) with the
define-by-run conditional space inside a ConcurrencyLimiter, or a grid; ASHA on the validation metric;
FailureConfig / CheckpointConfig; a storage path that may be shared storage. ``--resume`` restores the Tuner.
After the sweep, :mod:`sepray.leaderboard` evaluates the top-k finished trials on the full test songs, picks
the best and registers it.

The trainable, :func:`train_trial`, is an importable function; its body, :func:`sepray.trial_runs.run_trial`,
takes the report and checkpoint functions as arguments so that tests call it without Ray. What a trial does
with its MLflow child run (claim, replay a duplicate configuration, finish) is in :mod:`sepray.trial_runs`.

Trials that ASHA stops, that fail for good, or that a killed driver left behind are closed from the driver
(:class:`ChildRunCloser` and :func:`sepray.trial_runs.close_orphans`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from sepray import tracking, tune_snapshot
from sepray.search_space import grid_points
from sepray.sweep_parent import start_parent_run
from sepray.sweep_spec import GRID_KEY, SpecError, SweepSpec, load_spec
from sepray.trial_runs import (
    OUTCOME,
    claim_child_run,
    close_orphans,
    run_trial,
    sweep_context,
    trial_config,
)

STATE_FILE = "sepray_sweep.json"  # in the Ray experiment folder: parent run id, tracking URI, spec


class SweepError(RuntimeError):
    """A sweep that cannot start or resume; one line."""


# ----------------------------------------------------------------------------------------------------------
# naming trials


class TrialNamer:
    """Names a trial (and its folder) by its config signature plus Ray's trial id (picklable)."""

    def __init__(self, sweep: dict[str, Any]):
        self.sweep = {k: sweep[k] for k in ("fixed", "families", "label")}

    def __call__(self, trial) -> str:
        try:
            sig = trial_config(self.sweep, trial.config).signature()
        except Exception:
            sig = "invalid"
        return f"{sig}_{trial.trial_id}"


# ----------------------------------------------------------------------------------------------------------
# the trainable


def train_trial(config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """Ray Tune function trainable: resume from ``tune.get_checkpoint()``, train, ``tune.report`` per epoch."""
    trial_id = tune.get_context().get_trial_id()

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    with tempfile.TemporaryDirectory(prefix="sepray-resume-") as tmp:
        resume_dir = None
        if checkpoint is not None:
            resume_dir = Path(checkpoint.to_directory(tmp))
        run_trial(config, sweep, trial_id, report, resume_dir)


# ----------------------------------------------------------------------------------------------------------
# the driver side


class ChildRunCloser(Callback):
    """Closes the MLflow child run of a trial Tune stops (ASHA, time budget) or gives up on (picklable)."""

    def __init__(self, experiment: str, parent_run_id: str, uri: str):
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.uri = uri

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "KILLED", "stopped_early")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED", "failed")

    def _close(self, trial, status: str, outcome: str) -> None:
        try:
            runs = tracking.child_runs(self.experiment, self.parent_run_id, self.uri, trial_id=trial.trial_id)
            for r in runs:
                if r.info.status == "RUNNING":
                    run = tracking.Run(r.info.run_id, self.uri)
                    run.set_tags(
                        {OUTCOME: outcome, "sepray.epochs": (trial.last_result or {}).get("done_epochs", 0)}
                    )
                    run.end(status)
        except Exception as exc:  # never break the sweep over bookkeeping; close_orphans runs at the end
            print(f"sepray: could not close the MLflow run of trial {trial.trial_id}: {exc}", file=sys.stderr)


class StateSnapshot(Callback):
    """After each save of Tune's experiment state, keeps a consistent copy of it (picklable).

    See :mod:`sepray.tune_snapshot`: Tune's own copy to the experiment folder can mix two saves when the driver
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
                tune_snapshot.take(Path(self._staging), Path(self.experiment))
            except OSError as exc:  # never break the sweep over it; --resume falls back to Tune's own files
                print(f"sepray: could not copy Tune's experiment state: {exc}", file=sys.stderr)
        return None

    def __getstate__(self):
        return {"experiment": self.experiment, "_staging": None}


def build_tuner_parts(spec: SweepSpec, sweep: dict[str, Any]) -> dict[str, Any]:
    """The trainable, param space, TuneConfig and RunConfig of a sweep (also used by tests)."""
    import optuna

    trainable = tune.with_resources(
        tune.with_parameters(train_trial, sweep=sweep),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    search_alg = None
    param_space: dict[str, Any] = {}
    max_concurrent_trials = None
    if spec.search.algorithm == "grid":
        param_space = {GRID_KEY: tune.grid_search(grid_points(spec))}
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
    callbacks: list[Callback] = [ChildRunCloser(spec.name, sweep["parent_run_id"], sweep["uri"])]
    exp_dir = experiment_dir(spec)
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
        storage_path=storage_path(spec),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=spec.keep_checkpoints,
            checkpoint_score_attribute=spec.metric,
            checkpoint_score_order=spec.mode,
        ),
        callbacks=callbacks,
        verbose=1,
    )
    return {
        "trainable": trainable,
        "param_space": param_space,
        "tune_config": tune_config,
        "run_config": run_config,
    }


def storage_path(spec: SweepSpec) -> str:
    return spec.storage if "://" in spec.storage else str(Path(spec.storage).expanduser().resolve())


def experiment_dir(spec: SweepSpec) -> Path | None:
    """The local Ray experiment folder (None for remote storage URIs)."""
    return None if "://" in spec.storage else Path(storage_path(spec)) / spec.name


def _prepare_data(spec: SweepSpec) -> None:
    """Generate the synthetic corpus once in the driver, so trials do not wait on each other to build it."""
    from sepray.config import DataConfig, build_dataclass
    from sepray.data import ensure_synthetic_corpus

    data = build_dataclass(DataConfig, spec.fixed["data"], f"{spec.label}: data")
    if data.path is None:
        ensure_synthetic_corpus(data)


def run_sweep(
    spec_path: str,
    overrides=(),
    smoke_test: bool = False,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    log=print,
) -> dict[str, Any]:
    """Run (or resume) a sweep; returns {"parent_run_id", "best_run_id", "leaderboard", "trials", ...}."""
    from sepray import leaderboard

    spec = load_spec(spec_path, overrides, smoke_test)
    # save the experiment state often (--resume loses less); keep MLflow's download bars out of the output
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _init_ray(address, num_cpus)
    try:
        parent, uri = open_parent_run(spec, spec_path, resume, log)
        sweep = sweep_context(spec, trial_tracking_uri(uri, address, log), parent.run_id)
        started = time.time()
        try:
            _prepare_data(spec)
            results = _fit(spec, sweep, resume, log)
            trials = [_trial_summary(r) for r in results]
            if len(results) - results.num_terminated - results.num_errors:  # Ctrl-C: Tune saved its state
                close_orphans(spec.name, parent.run_id, uri, "interrupted")
                parent.set_tags({"sepray.sweep_status": "interrupted"})
                log(f"sweep {spec.name} interrupted; to continue it, run the same command with --resume")
                return {
                    "parent_run_id": parent.run_id,
                    "trials": trials,
                    "best_run_id": None,
                    "interrupted": True,
                }
            close_orphans(spec.name, parent.run_id, uri, "stopped_early")
            parent.log_metrics({"sweep_seconds": time.time() - started}, step=int(resume))
            exp_dir = experiment_dir(spec)
            if exp_dir is not None:
                (exp_dir / "sepray_trials.json").write_text(json.dumps(trials, indent=2))
            outcome = leaderboard.finish_sweep(spec, parent, uri, log=log)
            parent.set_tags({"sepray.sweep_status": "finished"})
            parent.end("FINISHED")
        except BaseException:
            parent.set_tags({"sepray.sweep_status": "interrupted"})
            raise
    finally:
        ray.shutdown()
    return {"parent_run_id": parent.run_id, "trials": trials, **outcome}


def open_parent_run(spec: SweepSpec, spec_path: str, resume: bool, log=print) -> tuple[tracking.Run, str]:
    """Start the sweep's parent run (and its state file), or reattach it on ``--resume``."""
    exp_dir = experiment_dir(spec)
    if resume:
        state_path = exp_dir / STATE_FILE if exp_dir else None
        if state_path is None or not state_path.is_file():
            raise SweepError(f"{spec.label}: no sweep {spec.name!r} to resume in {storage_path(spec)}")
        state = json.loads(state_path.read_text())
        if state["spec"] != json.loads(json.dumps(spec.raw, default=str)):
            raise SweepError(
                f"{spec.label}: the spec (with --set / --smoke-test) differs from the one sweep {spec.name!r} "
                "started with; resume with the same arguments"
            )
        uri = state["uri"]
        parent = tracking.attach_run(state["parent_run_id"], uri, reopen=True)
        interrupted = close_orphans(spec.name, parent.run_id, uri, "interrupted")
        log(
            f"resuming sweep {spec.name} (parent run {parent.run_id}); {interrupted} interrupted trial run(s)"
        )
        return parent, uri
    uri = tracking.tracking_uri()
    tracking.ensure_experiment(spec.name, uri)
    if exp_dir is not None and exp_dir.exists():
        aside = exp_dir.with_name(f"{exp_dir.name}.{datetime.now():%Y%m%d-%H%M%S}")
        exp_dir.rename(aside)
        log(f"moved the previous results of sweep {spec.name} to {aside} (--resume continues a sweep)")
    parent = start_parent_run(spec, uri, spec_path)
    if exp_dir is not None:
        exp_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "parent_run_id": parent.run_id,
            "uri": uri,
            "spec": json.loads(json.dumps(spec.raw, default=str)),
        }
        (exp_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    log(f"sweep {spec.name}: parent run {parent.run_id}; MLflow store {uri}")
    return parent, uri


def _fit(spec: SweepSpec, sweep: dict[str, Any], resume: bool, log=print):
    parts = build_tuner_parts(spec, sweep)
    path = f"{storage_path(spec).rstrip('/')}/{spec.name}"
    exp_dir = experiment_dir(spec)
    if resume and exp_dir is not None and exp_dir.is_dir():
        session = tune_snapshot.restore(exp_dir)
        if session is not None:
            log(f"restoring Tune's experiment state saved at {session}")
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
    return tuner.fit()


def _trial_summary(result) -> dict[str, Any]:
    metrics = result.metrics or {}
    keys = ("trial_id", "signature", "mlflow_run_id", "done_epochs", "reused")
    return {"error": result.error is not None, **{k: metrics.get(k) for k in keys}}


def trial_tracking_uri(uri: str, address: str | None, log=print) -> str:
    """The tracking URI the trials log to: on a cluster, a server on this node's loopback by its node address.

    ``MLFLOW_TRACKING_URI=http://127.0.0.1:5000`` is right for a driver on the head, wrong for a trial on another
    node (its own loopback). The server must listen on that address (``--host 0.0.0.0``) and accept it as a Host
    header (MLflow accepts private addresses by default; others need ``--allowed-hosts``).
    """
    if address is None:
        return uri
    if uri.startswith("sqlite:"):
        log(f"note: trials on other nodes log to {uri}: every node must see that file at that path")
        return uri
    parsed = urlsplit(uri)
    if parsed.scheme in ("http", "https") and parsed.hostname in ("localhost", "127.0.0.1", "::1"):
        node = ray.util.get_node_ip_address()
        host = f"[{node}]" if ":" in node else node
        userinfo = parsed.netloc.rpartition("@")[0]
        netloc = (f"{userinfo}@" if userinfo else "") + (f"{host}:{parsed.port}" if parsed.port else host)
        new = urlunsplit(parsed._replace(netloc=netloc))
        shown = urlunsplit(parsed._replace(netloc=netloc.rpartition("@")[2]))  # no credentials in the log
        log(
            f"note: {uri.replace(parsed.netloc, parsed.netloc.rpartition('@')[2])} is this node's loopback; "
            f"trials log to {shown} so that other nodes reach it"
        )
        return new
    return uri


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    if ray.is_initialized():
        return
    try:
        if address is None:
            # a fresh local instance, never a cluster that happens to run on this machine
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
        else:
            ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        hint = ""
        if address not in (None, "auto") and not os.environ.get("RAY_AUTH_MODE"):
            # Ray sends its token to an explicitly named address only when told to
            hint = (
                "; if that cluster uses token authentication (Ray's default when its head has a token), "
                "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            )
        raise SweepError(f"cannot start or join {where}: {str(exc).strip().splitlines()[0]}{hint}") from None


def main(argv: list[str] | None = None) -> int:
    """``python sweeps/run.py SPEC.yaml [--address auto|HOST:PORT] [--resume] [--smoke-test] [--set k=v]``."""
    import argparse

    from sepray.config import ConfigError

    parser = argparse.ArgumentParser(
        prog="sweeps/run.py",
        description="Run a sweep spec on Ray Tune (local Ray unless --address), tracked in MLflow.",
    )
    parser.add_argument("spec", help="sweep spec YAML, e.g. sweeps/quickstart.yaml")
    parser.add_argument(
        "--address", default=None, help="join a Ray cluster: auto or HOST:PORT (default: local Ray)"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this spec")
    parser.add_argument("--smoke-test", action="store_true", help="tiny budget that exercises everything")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec key")
    parser.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)"
    )
    args = parser.parse_args(argv)
    try:
        outcome = run_sweep(
            args.spec,
            args.set,
            smoke_test=args.smoke_test,
            resume=args.resume,
            address=args.address,
            num_cpus=args.num_cpus,
        )
    except (SpecError, ConfigError, SweepError, tracking.TrackingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue the sweep: the same command with --resume", file=sys.stderr)
        return 130
    if outcome.get("interrupted"):
        return 130
    return 0 if outcome.get("best_run_id") else 1


__all__ = [
    "ChildRunCloser",
    "SweepError",
    "build_tuner_parts",
    "claim_child_run",
    "main",
    "run_sweep",
    "run_trial",
    "train_trial",
]
