"""An ensemble from finished runs (``sepray ensemble RUN RUN ...``, and a sweep's ensemble stage): the members'
model packages copied into one ensemble package, weights fitted on their validation songs (or equal), logged as
an MLflow run of its own (tag ``sepray.kind`` = "ensemble"): ``model/`` (the package), ``run_config.json`` (its
first member's: the data it is evaluated on, at the ensemble's rate), ``ensemble/fit.json`` and the fit's
validation scores (``fit_valid_sdr_<source>``).

Weights ``fit`` need the members' common validation songs: their data configs must agree on everything that
decides which songs are validation songs (every ``data`` key but ``sample_rate``, ``channels``, ``augment`` and
``cache_dir``); otherwise a one-line error says which key differs and to use ``--weights equal``. The songs are
loaded at the ensemble's rate (its highest member rate); each member separates them at its own rate
(:func:`sepray.ensemble.members.member_estimate`); :func:`sepray.ensemble.weights.fit_weights` fits the weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import sepray
from sepray import SOURCES, names, tracking
from sepray.config import DataConfig, RunConfig, run_config_from_dict
from sepray.data import load_splits
from sepray.ensemble.members import Ensemble, Member, member_estimate
from sepray.ensemble.package import EnsembleConfig, member_configs, save_ensemble
from sepray.ensemble.weights import Fit, fit_weights, frame_statistics, objective
from sepray.errors import UsageError
from sepray.package import PackageError, load_package

WEIGHT_METHODS = ("fit", "equal")
NOT_SONG_KEYS = ("sample_rate", "channels", "augment", "cache_dir")  # data keys that do not choose the songs


@dataclass
class Built:
    """A logged ensemble, its run still open in the ``with`` block of :func:`ensemble_run`: the run, the loaded
    ensemble, the run config it is evaluated with (its first member's) and the fit (None for equal weights)."""

    run: tracking.Run
    ensemble: Ensemble
    config: RunConfig
    fit: Fit | None


def check_member_ids(run_ids: list[str], uri: str | None = None) -> None:
    """Each a finished run's id, given once, at least two, none an ensemble; UsageError / TrackingError (one
    line) otherwise. Whether each holds a model package is checked when it is downloaded."""
    if len(run_ids) < 2:
        raise UsageError(f"an ensemble needs at least two runs, got {len(run_ids)}")
    for i, run_id in enumerate(run_ids):
        tracking.check_run_id(run_id)
        if run_id in run_ids[:i]:
            raise UsageError(f"run {run_id} is given twice; list each member once")
    for run_id in run_ids:
        run = tracking.get_run(run_id, uri)
        if run.data.tags.get(names.KIND) == names.ENSEMBLE:
            raise UsageError(f"run {run_id} is an ensemble; list its members' runs instead")
        if run.info.status != "FINISHED":
            raise UsageError(f"run {run_id} is {run.info.status}, not FINISHED: its model may not be final")


def common_data(configs: list[RunConfig], run_ids: list[str]) -> DataConfig:
    """The members' shared data config (the first's); UsageError naming the first key two members differ in."""
    first = configs[0].data
    for run_id, cfg in zip(run_ids[1:], configs[1:], strict=True):
        for f in dataclasses.fields(DataConfig):
            a, b = getattr(first, f.name), getattr(cfg.data, f.name)
            if f.name not in NOT_SONG_KEYS and a != b:
                raise UsageError(
                    f"runs {run_ids[0]} and {run_id} were trained on different data (data.{f.name}: {a!r} vs "
                    f"{b!r}): no common validation songs to fit weights on; use --weights equal"
                )
    return first


def fit_on_validation(
    members: list[Member], data: DataConfig, rate: int, sources: list[str], chunk: float, device, log=print
) -> tuple[Fit, dict]:
    """Fit the weights on every validation song of ``data`` at ``rate`` -> (the fit, its description)."""
    data = dataclasses.replace(data, sample_rate=rate)
    songs = load_splits(data, ("valid",))["valid"]
    if not songs:
        raise UsageError(f"{data.describe()}: no validation songs to fit the weights on; use --weights equal")
    seconds = sum(song.mix.shape[-1] for song in songs) / rate
    log(f"fitting the ensemble's weights on {len(songs)} validation songs ({seconds:.1f} s of audio)")
    stats = []
    for song in songs:
        estimates = [member_estimate(m, song.mix, rate, chunk, device) for m in members]
        ests = torch.stack([torch.stack([est[s] for s in SOURCES]) for est in estimates])  # (K, S, C, T)
        refs = torch.stack([song.sources[s] for s in SOURCES])  # (S, C, T)
        stats.append(frame_statistics(refs, ests, song.mix, rate))
    fitted = [SOURCES.index(s) for s in sources]
    fit = fit_weights(stats, len(members), fitted)
    chosen = np.array([fit.weights])
    per_source = {s: float(objective(stats, chosen, [i])[0]) for i, s in enumerate(SOURCES)}
    description = {
        "method": fit.method,
        "objective": f"mean over {', '.join(sources)} of the mean over validation songs of museval v4 SDR "
        "(median over 1 s frames) of the combined estimates",
        "sources": list(sources),
        "songs": len(songs),
        "seconds": round(seconds, 3),
        "data": data.describe(),
        "score": fit.score,
        "source_scores": per_source,
        "member_scores": list(fit.member_scores),
    }
    return fit, description


def _member_run_name(run_id: str, uri: str | None) -> str:
    run = tracking.get_run(run_id, uri)
    return run.info.run_name or run_id[:8]


@contextlib.contextmanager
def ensemble_run(
    run_ids: list[str],
    weights: str = "fit",
    *,
    sources: tuple[str, ...] = SOURCES,
    experiment: str | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    uri: str | None = None,
    device: str = "auto",
    log=print,
) -> Iterator[Built]:
    """Build the ensemble of ``run_ids`` (weights ``fit`` on ``sources``' validation SDR, or ``equal``), log it as
    a run (in ``experiment``, default the first member's; nested under ``parent_run_id`` when given) and yield it
    while the run is open; the run ends FINISHED after the block, FAILED (KILLED on Ctrl-C) if it raises."""
    from sepray.device import resolve_device

    if weights not in WEIGHT_METHODS:
        raise UsageError(f"weights {weights!r}: expected one of {list(WEIGHT_METHODS)}")
    check_member_ids(run_ids, uri)
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="sepray-ensemble-") as tmp:
        packages, members, configs = [], [], []
        for i, run_id in enumerate(run_ids):
            packages.append(tracking.download_package(run_id, Path(tmp) / f"member-{i}", uri))
            try:
                members.append(load_package(packages[-1], dev))
            except PackageError as exc:
                where = f"run {run_id}: artifact {packages[-1].name}"
                raise PackageError(str(exc).replace(str(packages[-1]), where)) from None
            raw = tracking.load_run_config(run_id, uri)
            configs.append((raw, run_config_from_dict(raw, f"run {run_id}: run_config.json")))
        rate = max(info.sample_rate for _, info in members)
        fit, description = None, {"method": "equal weights"}
        if weights == "fit":
            data = common_data([cfg for _, cfg in configs], run_ids)
            chunk = min(cfg.train.eval_chunk_seconds for _, cfg in configs)
            fit, description = fit_on_validation(members, data, rate, list(sources), chunk, dev, log)
        values = fit.weights if fit else (1.0 / len(members),) * len(members)
        config = EnsembleConfig(
            member_configs([i for _, i in members], values, run_ids), rate, fit=description
        )
        save_ensemble(Path(tmp) / "ensemble", config, packages)
        ensemble = Ensemble(config, members)
        if experiment is None:
            experiment = tracking.experiment(tracking.get_run(run_ids[0], uri).info.experiment_id, uri).name
        names_ = [_member_run_name(r, uri) for r in run_ids]
        run_tags = {names.KIND: names.ENSEMBLE, names.OUTCOME: names.ENSEMBLE, names.MODEL: names.ENSEMBLE}
        run_tags |= {names.MEMBERS: ",".join(run_ids), names.VERSION: sepray.__version__, **(tags or {})}
        name = run_name or "ensemble of " + " + ".join(names_)
        run = tracking.start_run(experiment, name, run_tags, parent_run_id, uri)
        try:
            _log_ensemble(run, ensemble, configs[0][0], description, fit, weights, Path(tmp) / "ensemble")
            yield Built(run, ensemble, configs[0][1], fit)
        except KeyboardInterrupt:
            run.end("KILLED")
            raise
        except BaseException as exc:
            run.set_tags({names.LAST_ERROR: f"{type(exc).__name__}: {exc}"[:500]})
            run.end("FAILED")
            raise
        run.end("FINISHED")


def _log_ensemble(run, ensemble: Ensemble, run_config: dict, description: dict, fit, weights: str, package):
    members = ensemble.config.members
    run.log_params(
        {
            "members": ",".join(m.run_id or "" for m in members),
            "member_models": ",".join(m.model for m in members),
            "member_sample_rates": ",".join(str(m.sample_rate) for m in members),
            "weights": ",".join(f"{m.weight:.4g}" for m in members),
            "weights_method": weights,
            "sample_rate": ensemble.sample_rate,
            names.NUM_PARAMETERS_PARAM: ensemble.num_parameters,
        }
    )
    run.log_artifacts(package, names.PACKAGE)
    run.log_text(json.dumps(run_config, indent=2, sort_keys=True) + "\n", names.RUN_CONFIG)
    run.log_dict({"weights": list(ensemble.weights), "fit": description}, "ensemble/fit.json")
    if fit is not None:
        scores = {names.fit_metric(s): v for s, v in description["source_scores"].items()}
        run.log_metrics({names.fit_metric(): fit.score, **scores})
