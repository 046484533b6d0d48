"""The only module that imports ray: the Ray Tune side of a sweep.

Builds the ``tune.Tuner`` of a spec -- the trainable (:func:`train_trial`), Optuna (TPE, or its random sampler)
with the define-by-run conditional space inside a ConcurrencyLimiter, or a grid; ASHA on the validation metric;
FailureConfig / CheckpointConfig; the callbacks that close child runs Tune stops (:class:`ChildRunCloser`) and
keep a consistent copy of Tune's state (:class:`StateSnapshot`) -- fits or restores it (:func:`fit`), and
starts or joins Ray (:func:`init_ray`). Driving a sweep (parent run, resume state, tracking URI, the test stage)
is :mod:`sepray.sweep.driver`.

The trainable is an importable function; its body, :func:`sepray.sweep.trial.run_trial`, takes the report
and checkpoint functions as arguments so that tests call it without Ray.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from sepray import names, tracking
from sepray.errors import SweepError
from sepray.sweep import snapshot
from sepray.sweep.space import GRID_KEY, grid_points
from sepray.sweep.spec import SweepSpec
from sepray.sweep.trial import TrialContext, run_trial

LOCAL_NODE_ADDRESS = "127.0.0.1"  # the node address of a local Ray instance

# The signal (SIGINT / SIGTERM) that interrupted the running sweep, if any: read by the driver after ``fit``.
INTERRUPTED: dict[str, int | None] = {"signal": None}


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
        tune.report(metrics, checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    with tempfile.TemporaryDirectory(prefix="sepray-resume-") as tmp:
        resume_dir = None
        if checkpoint is not None:
            resume_dir = Path(checkpoint.to_directory(tmp))
        run_trial(config, sweep, trial_id, report, resume_dir, node_id=node_id)


# ----------------------------------------------------------------------------------------------------------
# callbacks and the Tuner


class ChildRunCloser(Callback):
    """Closes the MLflow child run of a trial Tune stops (ASHA, time budget) or gives up on (picklable)."""

    def __init__(self, experiment: str, parent_run_id: str, uri: str):
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.uri = uri
        self._retries: dict[str, dict[str, Any]] = {}  # trial id -> retry tags not yet on its run

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id in self._retries:
            self._tag_retries(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._tag_retries(trial.trial_id)
        self._close(trial, "KILLED", names.STOPPED_EARLY)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._retries.pop(trial.trial_id, None)
        self._close(trial, "FAILED", names.FAILED, failed=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Ray restarts the trial from its last checkpoint (its node died, it crashed): count it on the run,
        which the restarted trial reattaches (later, when the tracking store is down right now)."""
        self._retries[trial.trial_id] = {
            names.RETRIES: trial.num_failures,
            names.LAST_ERROR: _trial_error(trial),
        }
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
        except Exception as exc:  # tried again at the trial's next result
            print(f"sepray: could not tag the retry of trial {trial_id} yet: {exc}", file=sys.stderr)

    def _close(self, trial, status: str, outcome: str, failed: bool = False) -> None:
        try:
            runs = tracking.child_runs(self.experiment, self.parent_run_id, self.uri, trial_id=trial.trial_id)
            for r in runs:
                if r.info.status == "RUNNING":
                    run = tracking.Run(r.info.run_id, self.uri)
                    tags = {
                        names.OUTCOME: outcome,
                        names.EPOCHS: (trial.last_result or {}).get("done_epochs", 0),
                    }
                    if failed:
                        tags[names.RETRIES] = max(trial.num_failures - 1, 0)
                        tags[names.LAST_ERROR] = _trial_error(trial)
                    run.set_tags(tags)
                    run.end(status)
        except Exception as exc:  # never break the sweep over bookkeeping; close_orphans runs at the end
            print(f"sepray: could not close the MLflow run of trial {trial.trial_id}: {exc}", file=sys.stderr)


def _trial_error(trial) -> str:
    """One line on why a trial's attempt failed (the node died, the exception it raised)."""
    try:
        error = trial.get_error()
    except Exception:
        error = None
    if error is None:
        return "unknown error"
    cause = getattr(error, "cause", None) or getattr(error, "__cause__", None)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(cause or error).__name__}: {lines[-1] if lines else ''}"
    return text[:500]


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
                    f"{self.request}; the cluster has {_describe(ray.available_resources())} free of "
                    f"{_describe(ray.cluster_resources())}"
                )

    def __getstate__(self):
        return {"limit_s": self.limit_s, "request": self.request, "_since": {}}


def trial_request(spec: SweepSpec) -> dict[str, float]:
    """The resources one trial asks Ray for."""
    request = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    if spec.resources.memory_gb:
        request["memory"] = spec.resources.memory_gb * 2**30
    return request


def check_schedulable(spec: SweepSpec) -> None:
    """SweepError naming what is missing unless some alive node of the cluster can ever hold one trial."""
    need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu, "memory": spec.resources.memory_gb * 2**30}
    need = {k: v for k, v in need.items() if v > 0}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
        return
    best = {k: max((node.get(k, 0.0) for node in nodes), default=0.0) for k in need}
    missing = [k for k, v in need.items() if best[k] < v]
    raise SweepError(
        f"{spec.label}: resources: a trial needs {_describe(need)}, but no node of the Ray cluster has that "
        f"(the largest offer {_describe(best)}); short of {', '.join(missing) or 'one node with all of it'}: "
        "lower resources.* (--set resources.cpu=1) or add nodes"
    )


def _describe(resources: dict[str, float]) -> str:
    parts = []
    for key in ("CPU", "GPU", "memory", "cpu", "gpu"):
        if key in resources:
            value = resources[key]
            parts.append(f"{value / 2**30:.1f} GB memory" if key == "memory" else f"{value:g} {key.upper()}")
    return ", ".join(parts) or "nothing"


def build_tuner_parts(spec: SweepSpec, sweep: TrialContext) -> dict[str, Any]:
    """The trainable, param space, TuneConfig and RunConfig of a sweep (also used by tests)."""
    import optuna

    trainable = tune.with_resources(tune.with_parameters(train_trial, sweep=sweep), trial_request(spec))
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
        PendingWatch(spec.budget.pending_seconds, _describe(trial_request(spec))),
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
    columns.update({"epoch": "epoch", "outcome": "outcome"})
    return tune.CLIReporter(
        metric_columns=columns,
        parameter_columns={p.key: p.key.rsplit(".", 1)[-1] for p in spec.params},
        metric=spec.metric,
        mode=spec.mode,
        max_report_frequency=30,
    )


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
    return tuner.fit()


# ----------------------------------------------------------------------------------------------------------
# the Ray instance


def node_address() -> str:
    """This node's address in the Ray cluster (what other nodes reach it by)."""
    return ray.util.get_node_ip_address()


def shutdown() -> None:
    ray.shutdown()


# environment variables a driver joining a cluster hands its trials (through Ray's runtime_env): MLflow's
# credentials (a server with basic auth) and HTTP retry settings, and sepray's tracking retry window
FORWARDED_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "SEPRAY_TRACKING_RETRY_SECONDS",
)
CONNECT_TIMEOUT_S = 5.0  # to find that nothing listens at a cluster's address (Ray itself waits minutes)


def check_reachable(address: str) -> None:
    """SweepError unless something accepts a TCP connection at the cluster's GCS address (``auto``: the cluster
    this machine belongs to); Ray's own ``ray.init`` would retry for minutes against a port with no Ray."""
    import socket

    from ray._private.services import canonicalize_bootstrap_address

    if address.startswith("ray://"):
        return  # Ray client: ray.init reports an unreachable server itself
    try:
        gcs = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as exc:
        raise SweepError(
            f"cannot join the Ray cluster at {address}: {str(exc).strip().splitlines()[0]}"
        ) from None
    if gcs is None:
        return
    host, _, port = gcs.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise SweepError(
            f"cannot join the Ray cluster at {address}: nothing accepts connections at {gcs} "
            f"({exc.strerror or exc}); is the head up (`ray start --head --port {port or 6379}`)?"
        ) from None


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Start a fresh local Ray instance (``address=None``) or join the cluster at ``address``."""
    if ray.is_initialized():
        return
    try:
        if address is None:
            # a fresh local instance, never a cluster that happens to run on this machine
            # and one that other machines are not told of: its node address is the loopback (what Ray still
            # opens on all interfaces is listed in the README, guarded by Ray's token authentication)
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address=LOCAL_NODE_ADDRESS,
            )
        else:
            check_reachable(address)
            # the trials on other nodes need the driver's tracking credentials and retry settings
            env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV}
            ray.init(address=address, runtime_env={"env_vars": env} if env else None)
    except SweepError:
        raise
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
