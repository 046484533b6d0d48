"""The only module that imports mlflow: tracking URI, experiments, runs, metrics, artifacts, model registry.

Default store: ``sqlite:///<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlartifacts``; ``MLFLOW_TRACKING_URI``
overrides (a server such as ``http://head:5000`` on a cluster). Every call goes through ``MlflowClient`` with an
explicit run id (no global "active run"), so trainers in threads, processes and Ray workers never mix runs up.
Writes are retried when sqlite reports a lock, so concurrent trials do not lose them. A local sqlite store is
checked before mlflow opens it, and a store that fails (full, read-only) is named in one line
(:mod:`sepray.tracking_store`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sepray import interrupts, names
from sepray.numbers import is_finite
from sepray.tracking_store import (  # noqa: F401  (DEFAULT_DB, TrackingError: part of this API)
    DEFAULT_DB,
    TrackingError,
    check_store,
    default_artifact_root,
    store_failure,
    tracking_uri,
)

# MLflow draws a progress bar on stderr for every artifact download; our commands keep stderr for messages.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

T = TypeVar("T")


# A tracking server that is down (restarting, a network outage) is waited for: every call is retried with a
# bounded backoff for up to SEPRAY_TRACKING_RETRY_SECONDS (default 120 s), then fails with a TrackingError that
# names the store (a sweep's trial then crashes, and Ray retries it from its last checkpoint). MLflow's own HTTP
# retries (minutes by default) are shortened so that this window is what counts.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
RETRY_SECONDS_ENV = "SEPRAY_TRACKING_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0
MAX_RETRY_DELAY_S = 5.0
TRANSIENT = (
    "locked",  # sqlite
    "busy",
    "connection",  # a server that is down or restarting
    "max retries exceeded",
    "temporarily unavailable",
    "timed out",
    "status code 502",
    "status code 503",
    "status code 504",
)


def retry_seconds() -> float:
    """How long a tracking call keeps retrying a store that is locked or unreachable."""
    try:
        return max(float(os.environ.get(RETRY_SECONDS_ENV, DEFAULT_RETRY_SECONDS)), 0.0)
    except ValueError:
        return DEFAULT_RETRY_SECONDS


def _transient(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(word in text for word in TRANSIENT)


def _retry(fn: Callable[[], T], uri: str | None = None) -> T:
    """``fn()``, retried while the store at ``uri`` is locked or unreachable, for at most :func:`retry_seconds`;
    a store that cannot go on (full, read-only, damaged) is a TrackingError naming it."""
    window = retry_seconds()
    deadline = time.monotonic() + window
    delay = 0.05
    while True:
        try:
            with interrupts.deferred():  # never a Ctrl-C / SIGTERM halfway through a store transaction
                return fn()
        except Exception as exc:  # MlflowException, or sqlalchemy's OperationalError raw in some paths
            failure = store_failure(exc, tracking_uri(uri))
            if failure is not None:
                raise TrackingError(failure) from exc
            if not _transient(exc):
                raise
            if time.monotonic() + delay > deadline:
                if isinstance(exc, MlflowException) and "locked" not in str(exc).lower():
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise TrackingError(
                        f"the tracking store did not answer for {window:g} s ({RETRY_SECONDS_ENV}): {first[:300]}"
                    ) from exc
                raise
        time.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_DELAY_S)


def client(uri: str | None = None, need: str = "read") -> MlflowClient:
    """A client of the store at ``uri``, checked first (once per process) for ``need``: read | write | create."""
    uri = tracking_uri(uri)
    check_store(uri, need)
    return MlflowClient(tracking_uri=uri)


def check(need: str = "read", uri: str | None = None) -> str:
    """Check the store at ``uri`` (default: the one in force) for ``need`` before a command's work; its URI."""
    uri = tracking_uri(uri)
    check_store(uri, need)
    return uri


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """Create the store and experiment once (call in the driver before workers start); return its id.

    A new experiment is of the "model training" kind (tag ``mlflow.experimentKind``), so the MLflow UI offers
    its Runs table rather than the GenAI overview.
    """
    uri = tracking_uri(uri)
    c = client(uri, "create")
    try:
        exp = _retry(lambda: c.get_experiment_by_name(name), uri)
    except MlflowException as exc:
        raise TrackingError(f"tracking store {uri}: {str(exc).splitlines()[0]}") from None
    if exp is not None:
        return exp.experiment_id
    try:
        return _retry(
            lambda: c.create_experiment(
                name,
                artifact_location=default_artifact_root(uri),
                tags={names.EXPERIMENT_KIND: names.MODEL_TRAINING},
            ),
            uri,
        )
    except MlflowException:
        exp = c.get_experiment_by_name(name)  # created concurrently
        if exp is None:
            raise
        return exp.experiment_id


class Run:
    """One MLflow run, addressed by id. Create with :func:`start_run` or reattach with :func:`attach_run`."""

    def __init__(self, run_id: str, uri: str | None = None):
        self.run_id = run_id
        self.uri = tracking_uri(uri)
        self.client = client(self.uri)

    def _retry(self, fn: Callable[[], T]) -> T:
        return _retry(fn, self.uri)

    # -- values ---------------------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Log params once; values already logged (a resumed run) are skipped, not re-sent."""
        existing = self._retry(lambda: self.client.get_run(self.run_id)).data.params
        items = [Param(k, _param_text(v)) for k, v in sorted(params.items()) if k not in existing]
        for i in range(0, len(items), 100):
            chunk = items[i : i + 100]
            self._retry(lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, int(step or 0))
            for k, v in metrics.items()
            if v is not None and is_finite(v)
        ]
        if items:
            self._retry(lambda: self.client.log_batch(self.run_id, metrics=items))

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        if items:
            self._retry(lambda: self.client.log_batch(self.run_id, tags=items))

    # -- artifacts ------------------------------------------------------------------------------------------
    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_artifacts(self, directory: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._retry(lambda: self.client.log_artifacts(self.run_id, str(directory), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._retry(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n", artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self._retry(lambda: self.client.log_figure(self.run_id, figure, artifact_file))

    def end(self, status: str = "FINISHED") -> None:
        """status: FINISHED | FAILED | KILLED."""
        self._retry(lambda: self.client.set_terminated(self.run_id, status))

    # -- reading --------------------------------------------------------------------------------------------
    def info(self):
        return self._retry(lambda: self.client.get_run(self.run_id))

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return [
            (m.step, m.value) for m in self._retry(lambda: self.client.get_metric_history(self.run_id, key))
        ]


def start_run(
    experiment: str,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    uri: str | None = None,
) -> Run:
    """Create a run (nested under ``parent_run_id`` when given)."""
    exp_id = ensure_experiment(experiment, uri)
    c = client(uri)
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = _retry(lambda: c.create_run(exp_id, run_name=run_name, tags=all_tags), uri)
    return Run(run.info.run_id, uri)


def attach_run(run_id: str, uri: str | None = None, reopen: bool = False) -> Run:
    """Reattach to an existing run (e.g. a retried trial); ``reopen`` marks it RUNNING again."""
    run = Run(run_id, uri)
    _get_run(run.client, run_id)
    if reopen:
        run._retry(lambda: run.client.update_run(run_id, status="RUNNING"))
    return run


def find_runs(experiment: str, filter_string: str = "", uri: str | None = None) -> list:
    """All runs of an experiment matching an MLflow filter string (e.g. "tags.sepray.trial = 'abc'")."""
    c = client(uri)
    exp = _retry(lambda: c.get_experiment_by_name(experiment), uri)
    if exp is None:
        return []
    runs, token = [], None
    while True:
        page = _retry(
            lambda t=token: c.search_runs([exp.experiment_id], filter_string, max_results=1000, page_token=t),
            uri,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


RUN_ID = re.compile(r"[0-9a-f]{32}")


def check_run_id(run_id: str) -> str:
    """``run_id`` when it has the form of an MLflow run id (32 lowercase hex characters), else TrackingError."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise TrackingError(
            f"{run_id!r}: not a run id: expected 32 hex characters (as `sepray train` prints)"
        )
    return run_id


def _get_run(c: MlflowClient, run_id: str):
    check_run_id(run_id)
    try:
        return _retry(lambda: c.get_run(run_id), c.tracking_uri)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            raise TrackingError(f"run {run_id}: no such MLflow run in {c.tracking_uri}") from None
        raise TrackingError(f"run {run_id}: {str(exc).splitlines()[0]}") from None


def get_run(run_id: str, uri: str | None = None):
    """The MLflow run entity; TrackingError (one line) when the id is unknown."""
    return _get_run(client(uri), run_id)


def download_artifacts(
    run_id: str, artifact_path: str, dst: str | os.PathLike, uri: str | None = None
) -> Path:
    """Download a run's artifact (file or folder) into ``dst``; TrackingError when the run or artifact is absent."""
    c = client(uri)
    _get_run(c, run_id)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst), tracking_uri=c.tracking_uri
        )
    except (MlflowException, OSError) as exc:
        raise TrackingError(
            f"run {run_id}: has no artifact {artifact_path!r} ({str(exc).splitlines()[0]})"
        ) from None
    path = Path(local)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        raise TrackingError(f"run {run_id}: has no artifact {artifact_path!r}")
    return path


def download_package(run_id: str, dst: str | os.PathLike, uri: str | None = None) -> Path:
    """Download the run's model package folder (``model/``); TrackingError when it has none."""
    get_run(run_id, uri)  # an unknown run or an unusable store is said as such, not as a missing package
    try:
        return download_artifacts(run_id, names.PACKAGE, dst, uri)
    except TrackingError as exc:
        if "no such MLflow run" in str(exc):
            raise
        raise TrackingError(f"run {run_id}: has no model package (artifact '{names.PACKAGE}/')") from None


def load_run_config(run_id: str, uri: str | None = None) -> dict[str, Any]:
    """The resolved run config dict a training run logged as ``run_config.json``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(run_id, names.RUN_CONFIG, tmp, uri)
        return json.loads(path.read_text())


def register_model(run_id: str, name: str, uri: str | None = None) -> str:
    """Register the run's package in the MLflow model registry under ``name``; returns the version."""
    c = client(uri)
    try:
        _retry(lambda: c.create_registered_model(name), uri)
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    run = _get_run(c, run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{names.PACKAGE}"
    mv = _retry(lambda: c.create_model_version(name, source, run_id=run_id), uri)
    return str(mv.version)


def _param_text(v: Any) -> str:
    text = json.dumps(v, default=_json_default) if isinstance(v, (list, tuple, dict)) else str(v)
    return text[:6000]


def _json_default(v: Any):
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (set, tuple)):
        return list(v)
    if isinstance(v, Path):
        return str(v)
    return str(v)


# -- sweeps (sepray.sweep.raytune.tuner / sepray.sweep.leaderboard) -------------------------------------------------------------


def child_runs(experiment: str, parent_run_id: str, uri: str | None = None, **tags: str) -> list:
    """Runs nested under ``parent_run_id`` (oldest first), optionally with ``sepray.<key>`` tags equal to values."""
    clauses = [f"tags.mlflow.parentRunId = '{parent_run_id}'"]
    clauses += [f"tags.`sepray.{key}` = '{value}'" for key, value in tags.items()]
    runs = find_runs(experiment, " and ".join(clauses), uri)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def experiment(experiment_id: str, uri: str | None = None):
    """The MLflow experiment entity with this id."""
    return _retry(lambda: client(uri).get_experiment(experiment_id), uri)


def list_artifact_files(run_id: str, path: str = "", uri: str | None = None) -> list[str]:
    """Every artifact file of a run below ``path`` (recursively)."""
    c = client(uri)
    out: list[str] = []
    for item in _retry(lambda: c.list_artifacts(run_id, path or None), uri):
        out += list_artifact_files(run_id, item.path, uri) if item.is_dir else [item.path]
    return out


def delete_run(run_id: str, uri: str | None = None) -> None:
    """Soft-delete a run (it leaves searches and the UI's default view)."""
    c = client(uri)
    _retry(lambda: c.delete_run(run_id), uri)


def log_table(run: Run, data: dict[str, list], artifact_file: str) -> None:
    """A column -> values table as a JSON table artifact (shown as a table in the MLflow UI)."""
    run._retry(lambda: run.client.log_table(run.run_id, data=data, artifact_file=artifact_file))
