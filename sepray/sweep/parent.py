"""A sweep's MLflow parent run: the spec as run, its search space, versions and the git commit (ray-free)."""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

import sepray
from sepray import names, tracking
from sepray.sweep.spec import SweepSpec


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(sepray.__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def start_parent_run(spec: SweepSpec, uri: str, spec_path: str | None) -> tracking.Run:
    """The sweep's parent run: spec, search space, versions, git commit."""
    tags = {
        names.KIND: "sweep",
        names.SWEEP: spec.name,
        names.VERSION: sepray.__version__,
        "ray.version": version("ray"),
        "optuna.version": version("optuna"),
        "python.version": platform.python_version(),
        names.SMOKE_TEST: spec.smoke_test,
    }
    commit = git_commit()
    if commit:
        tags["git.commit"] = commit
    if spec.description:
        tags["mlflow.note.content"] = spec.description
    run = tracking.start_run(spec.name, run_name=f"sweep-{spec.name}", tags=tags, uri=uri)
    run.log_params(
        {
            "algorithm": spec.search.algorithm,
            "num_samples": spec.num_samples,
            "max_concurrent": spec.search.max_concurrent,
            "seed": spec.search.seed,
            "scheduler": json.dumps(dataclasses.asdict(spec.scheduler)),
            "metric": spec.metric,
            "mode": spec.mode,
            "select": spec.select,
            "test_metric": spec.test_metric,
            "top_k": spec.top_k,
            "epochs_per_trial": spec.epochs,
            "steps_per_epoch": spec.fixed["train"].get("steps_per_epoch"),
            "resources": json.dumps(dataclasses.asdict(spec.resources)),
            "searched": ",".join(p.key for p in spec.params),
        }
    )
    run.log_dict(spec.raw, "sweep_spec.json")
    run.log_dict(spec.describe_space(), "search_space.json")
    if spec_path and Path(spec_path).is_file():
        run.log_artifact(spec_path)
    return run
