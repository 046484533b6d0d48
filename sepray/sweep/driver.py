"""Driving a sweep (ray-free): the spec, its MLflow parent run, resume state, the trials' tracking URI, the
Tuner (:mod:`sepray.sweep.raytune`, the only package importing ray) and the test stage
(:mod:`sepray.sweep.leaderboard`).

``run_sweep`` validates the spec and the tracking store, takes the sweep's lock (one driver per storage and
name), creates the MLflow experiment and the sweep's parent run (or reattaches it on ``--resume`` from the
state file in the Ray experiment folder), starts or joins Ray, fits the Tuner, closes child runs no trial is
alive to finish, and evaluates the top-k on the full test songs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sepray import names, tracking
from sepray.errors import SweepError
from sepray.locks import held_lock
from sepray.sweep import snapshot
from sepray.sweep.parent import start_parent_run
from sepray.sweep.raytune import callbacks, cluster, tuner
from sepray.sweep.report import publish_report_or_note
from sepray.sweep.spec import SweepSpec, load_spec
from sepray.sweep.trial import TrialContext, close_orphans

STATE_FILE = "sepray_sweep.json"  # in the Ray experiment folder: parent run id, tracking URI, spec


def with_absolute_data_paths(spec: SweepSpec) -> SweepSpec:
    """The spec with its fixed dataset roots and split files made absolute against the driver's working folder:
    Ray Tune runs each trial in its own working folder (``RAY_CHDIR_TO_TRIAL_DIR``)."""
    from sepray.config import absolute_data_paths

    return dataclasses.replace(spec, fixed={**spec.fixed, "data": absolute_data_paths(spec.fixed["data"])})


def check_data(spec: SweepSpec, on_cluster: bool, log=print) -> None:
    """Before anything starts: every remote dataset root (``s3://``, ``gs://``, ...) of the spec can be listed
    from here, else one line naming the URI and why (unreachable, access denied, no such bucket). A local sweep
    whose machine already holds a complete copy goes on from that copy (a note); on a cluster the trials of
    other nodes copy it from the URI, so it must answer."""
    from sepray.config import DataConfig
    from sepray.data import cache_root, remote
    from sepray.schema import build_dataclass

    data = build_dataclass(DataConfig, spec.fixed["data"], f"{spec.label}: data")
    for corpus in data.corpora():
        if remote.is_remote(corpus.path):
            log(f"data: {remote.check_reachable(corpus.path, cache_root(data), not on_cluster)}")
        elif remote.is_uri(corpus.path) and not remote.file_uri_path(corpus.path).is_dir():
            raise remote.RemoteDataError(f"{corpus.path}: no such dataset folder on this machine")


def prepare_data(spec: SweepSpec, log=print) -> None:
    """Generate the synthetic corpus (and decode real corpora into the audio cache) once in the driver, so
    trials do not wait on each other to build it or decode the same files at once."""
    from sepray.config import DataConfig
    from sepray.data import ensure_synthetic_corpus, prepare_corpora
    from sepray.schema import build_dataclass

    data = build_dataclass(DataConfig, spec.fixed["data"], f"{spec.label}: data")
    if data.path is None:
        ensure_synthetic_corpus(data)
    else:
        prepare_corpora(data, log)


def run_sweep(
    spec_path: str,
    overrides=(),
    smoke_test: bool = False,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    log=print,
    resume_command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) a sweep; returns {"parent_run_id", "best_run_id", "leaderboard", "trials", ...}.

    An interrupted sweep (Ctrl-C or SIGTERM while the trials run) returns ``interrupted: True`` and the signal;
    its parent run ends KILLED with ``sepray.sweep_status = interrupted`` and nothing is evaluated, tagged or
    registered; ``--resume`` reopens it. A failure ends the parent run FAILED. It is never left RUNNING.
    Before anything starts: a tracking store that cannot be used, or another live driver of the same sweep
    (the lock of :func:`sweep_lock`), is a one-line error.
    """
    spec = with_absolute_data_paths(load_spec(spec_path, overrides, smoke_test))
    if not resume:  # (a resumed sweep's store is the one in its state file)
        tracking.check("create")
    with held_lock(sweep_lock(spec), f"sweep {spec.name} (storage {spec.storage_path()})", LOCK_HINT):
        return _run_sweep(spec, spec_path, resume, address, num_cpus, log, resume_command)


LOCK_HINT = "; wait for it, stop it, or give this sweep its own --set name=... or --set storage=..."


def sweep_lock(spec: SweepSpec) -> Path:
    """The lock file of a sweep's driver: beside its Ray experiment folder; for a remote storage (s3://...),
    in this machine's sepray cache, keyed by the storage URI (it keeps out a second driver on this machine only)."""
    exp_dir = spec.experiment_dir()
    if exp_dir is not None:
        return exp_dir.with_name(f".{spec.name}.sepray-lock")
    key = hashlib.sha1(f"{spec.storage_path().rstrip('/')}/{spec.name}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("SEPRAY_CACHE") or Path.home() / ".cache" / "sepray")
    return cache / "locks" / f"{spec.name}-{key}.lock"


def _run_sweep(spec, spec_path, resume, address, num_cpus, log, resume_command) -> dict[str, Any]:
    from sepray.sweep import leaderboard

    # save the experiment state often (--resume loses less); keep MLflow's download bars out of the output
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the table of tuner.progress_reporter, not Ray's own
    check_data(spec, on_cluster=address is not None, log=log)
    cluster.init_ray(address, num_cpus)
    again = resume_command or "the same command with --resume"
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _terminate)  # outside Tune's loop, SIGTERM stops like Ctrl-C
    except ValueError:  # not the main thread
        previous_sigterm = None
    try:
        # resources.gpu: auto -> each family's GPU share on a cluster with GPU nodes, else 0; then a node for each
        spec = cluster.plan_resources(spec, autoscaling=address is not None, log=log)
        parent, uri = open_parent_run(spec, spec_path, resume, log)
        sweep = TrialContext.of(spec, trial_tracking_uri(uri, address, log), parent.run_id)
        started = time.time()
        try:
            prepare_data(spec, log)
            _restore_snapshot(spec, resume, log)
            results = tuner.fit(spec, sweep, resume, log)
            trials = [_trial_summary(r) for r in results]
            unfinished = len(results) - results.num_terminated - results.num_errors
            signum = callbacks.INTERRUPTED["signal"]
            if signum is not None or unfinished:  # Ctrl-C / SIGTERM: Tune saved its state
                _end_parent(parent, spec, uri, names.INTERRUPTED, "KILLED")
                log(
                    f"sweep {spec.name} interrupted: nothing was evaluated or registered; to finish it: {again}"
                )
                return {
                    "parent_run_id": parent.run_id,
                    "trials": trials,
                    "best_run_id": None,
                    "interrupted": True,
                    "signal": signum or signal.SIGINT,
                }
            cut = tuner.keep_cut_trials(results, sweep, log)
            if cut:
                log(
                    f"the sweep's time limit ({names.SWEEP_LIMIT} = {spec.budget.sweep_seconds} s) cut "
                    f"{len(cut)} trial(s); each keeps the model of its last completed epoch"
                )
            close_orphans(spec.name, parent.run_id, uri, names.STOPPED_EARLY)
            parent.log_metrics({"sweep_seconds": time.time() - started}, step=int(resume))
            exp_dir = spec.experiment_dir()
            if exp_dir is not None:
                (exp_dir / "sepray_trials.json").write_text(json.dumps(trials, indent=2))
            outcome = leaderboard.finish_sweep(spec, parent, uri, log=log)
            publish_report_or_note(spec, parent, uri, log)
            parent.set_tags({names.SWEEP_STATUS: names.FINISHED})
            parent.end("FINISHED")
        except KeyboardInterrupt:
            _end_parent(parent, spec, uri, names.INTERRUPTED, "KILLED")
            log(f"sweep {spec.name} interrupted: nothing was registered as best; to finish it: {again}")
            raise
        except BaseException as exc:
            _end_parent(parent, spec, uri, names.FAILED, "FAILED", f"{type(exc).__name__}: {exc}")
            raise
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        cluster.shutdown()
    return {"parent_run_id": parent.run_id, "trials": trials, **outcome}


def _terminate(signum, frame) -> None:
    callbacks.INTERRUPTED["signal"] = signum
    raise KeyboardInterrupt


def _end_parent(parent: tracking.Run, spec: SweepSpec, uri: str, status: str, run_status: str, reason=None):
    """Close the sweep's open child runs and its parent run (tagged ``status``); never raises."""
    try:
        close_orphans(spec.name, parent.run_id, uri, status)
        tags = {names.SWEEP_STATUS: status}
        if reason:
            tags[names.LAST_ERROR] = str(reason)[:500]
        parent.set_tags(tags)
        parent.end(run_status)
    except Exception as exc:  # the tracking store may be the reason we are here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"sepray: could not close the sweep's MLflow runs: {first}", file=sys.stderr)


def open_parent_run(spec: SweepSpec, spec_path: str, resume: bool, log=print) -> tuple[tracking.Run, str]:
    """Start the sweep's parent run (and its state file), or reattach it on ``--resume``."""
    exp_dir = spec.experiment_dir()
    if resume:
        state_path = exp_dir / STATE_FILE if exp_dir else None
        if state_path is None or not state_path.is_file():
            raise SweepError(f"{spec.label}: no sweep {spec.name!r} to resume in {spec.storage_path()}")
        state = json.loads(state_path.read_text())
        if state["spec"] != json.loads(json.dumps(spec.raw, default=str)):
            raise SweepError(
                f"{spec.label}: the spec (with --set / --smoke-test) differs from the one sweep {spec.name!r} "
                "started with; resume with the same arguments"
            )
        uri = tracking.check("write", state["uri"])
        parent = tracking.attach_run(state["parent_run_id"], uri, reopen=True)
        interrupted = close_orphans(spec.name, parent.run_id, uri, names.INTERRUPTED)
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


def _restore_snapshot(spec: SweepSpec, resume: bool, log=print) -> None:
    """On ``--resume``, put the last consistent copy of Tune's state in place (see :mod:`.snapshot`)."""
    exp_dir = spec.experiment_dir()
    if resume and exp_dir is not None and exp_dir.is_dir():
        session = snapshot.restore(exp_dir)
        if session is not None:
            log(f"restoring Tune's experiment state saved at {session}")


def _trial_summary(result) -> dict[str, Any]:
    metrics = result.metrics or {}
    keys = (
        "trial_id",  # Tune's own
        names.RESULT_SIGNATURE,
        names.RESULT_RUN_ID,
        names.RESULT_DONE_EPOCHS,
        names.RESULT_REUSED,
        names.RESULT_FAILED,
    )
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
        node = cluster.node_address()
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
