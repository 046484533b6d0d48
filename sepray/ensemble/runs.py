"""An ensemble's MLflow run, seen from the commands that take a run id: ``sepray separate`` and ``sepray evaluate``
load a run's separator here, a single model (:func:`sepray.separate.load_run_model`) or an ensemble (a run whose
``sepray.kind`` tag is "ensemble", its ``model/`` artifact an ensemble package).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from sepray import names, tracking
from sepray.ensemble.members import Ensemble
from sepray.ensemble.package import load_members
from sepray.errors import UsageError
from sepray.output_folders import check_separation
from sepray.package import run_package
from sepray.separate import load_run_model, separate_file
from sepray.separate import separate_run as separate_model_run


def is_ensemble_run(run_id: str, uri: str | None = None) -> bool:
    """Whether MLflow run ``run_id`` is an ensemble's (TrackingError, one line, for a malformed or unknown id)."""
    return tracking.get_run(run_id, uri).data.tags.get(names.KIND) == names.ENSEMBLE


def load_run_ensemble(run_id: str, device: torch.device | str = "cpu", uri: str | None = None) -> Ensemble:
    """Download and load the ensemble package logged by run ``run_id``, its members on ``device``."""
    with run_package(run_id, uri) as package:  # errors name the run's artifact
        return Ensemble(*load_members(package, device))


def load_run_separator(run_id: str, device: torch.device | str = "cpu", uri: str | None = None):
    """The separator logged by run ``run_id`` -> (model, info): a single model and its PackageInfo, or an
    :class:`Ensemble` and its EnsembleConfig (both have ``sample_rate``)."""
    if is_ensemble_run(run_id, uri):
        ensemble = load_run_ensemble(run_id, device, uri)
        return ensemble, ensemble.config
    return load_run_model(run_id, device, uri)


def separate_run(
    run_id: str, inputs: list[str | os.PathLike], outdir: str | os.PathLike = "separated", **options
) -> list[Path]:
    """``sepray separate`` with any run: an ensemble's by :func:`separate_ensemble_run`, a single model's by
    :func:`sepray.separate.separate_run`; ``options`` are their keyword arguments (``device``,
    ``chunk_seconds``, ``max_memory``, ``uri``, ``show_progress``, ``log``, and any a single model also takes)."""
    try:
        ensemble = is_ensemble_run(run_id, options.get("uri"))
    except tracking.TrackingError:  # a malformed or unknown run: reported after the inputs are checked
        ensemble = False
    if ensemble:
        return separate_ensemble_run(run_id, inputs, outdir, **options)
    return separate_model_run(run_id, inputs, outdir, **options)


def separate_ensemble_run(
    run_id: str,
    inputs: list[str | os.PathLike],
    outdir: str | os.PathLike = "separated",
    *,
    chunk_seconds: float | None = None,
    max_memory: int | None = None,
    device: str = "auto",
    engine: str = "torch",
    uri: str | None = None,
    log: Callable[[str], None] | None = None,
    show_progress: bool = True,
) -> list[Path]:
    """``sepray separate`` with an ensemble's run: the checks of a single model's first (every input and output
    folder, stale partial separations), then each file streamed through the members
    (:meth:`Ensemble.file_stream`). ``chunk_seconds=None``: each member's own longest chunk that fits
    ``max_memory`` (the members run one after another, so each may use the whole budget)."""
    from sepray.chunk_budget import auto_chunk_seconds, default_max_memory, format_memory
    from sepray.device import resolve_device

    if engine != "torch":
        raise UsageError(
            f"run {run_id} is an ensemble: separate it with --engine torch (its members are eager)"
        )
    if chunk_seconds is not None and not (math.isfinite(chunk_seconds) and chunk_seconds > 0):
        raise UsageError(f"chunk_seconds must be a finite number > 0, got {chunk_seconds}")
    paths, outdir = [Path(p) for p in inputs], Path(outdir)
    check_separation(paths, outdir, log)
    dev = resolve_device(device)
    ensemble = load_run_ensemble(run_id, dev, uri)
    if chunk_seconds is None:
        budget = default_max_memory(dev) if max_memory is None else max_memory
        chunks = tuple(auto_chunk_seconds(m, info.sample_rate, budget, dev) for m, info in ensemble.members)
        ensemble.chunk_seconds, chunk_seconds = chunks, min(chunks)
        if show_progress:
            lengths = " / ".join(f"{c:.3g}" for c in chunks)
            print(
                f"{lengths} s chunks, one per member (memory budget {format_memory(budget)})", file=sys.stderr
            )
    return [
        separate_file(ensemble, ensemble.config, p, outdir, dev, chunk_seconds, show_progress, log)
        for p in paths
    ]
