"""``sepray evaluate``: full-length separation of every song of a split with a logged model, scored with
museval-exact SDR (1 s frames, median over frames per song, median over songs), logged back to the run; with
``metric="bss_eval_v3"`` also BSS Eval v3 over each whole song (NSDR, SIR, SAR) and the length-weighted GNSDR /
GSIR / GSAR over songs (`sepray.scoring_v3`)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepray import SOURCES, metrics, names, scoring_v3
from sepray.bss_eval import global_scores, score_clip
from sepray.config import run_config_from_dict
from sepray.data import load_splits
from sepray.data.remote import is_uri
from sepray.data.splits import SPLITS
from sepray.ensemble.members import Ensemble, separate_any
from sepray.ensemble.runs import load_run_separator
from sepray.errors import MissingFileError, UsageError
from sepray.numbers import json_safe, nanmean, nanmedian
from sepray.separate import separate_song

METRIC_NOTE = (
    "SDR in dB: museval v4 (BSSEval v4) framewise, 1 s windows/hop, median over frames, then over songs"
)


def evaluate_songs(
    model,
    songs,
    sample_rate: int,
    device="cpu",
    chunk_seconds: float = 10.0,
    metric: str = names.MUSEVAL_V4,
    separate: Callable[[Any], dict[str, torch.Tensor]] | None = None,
    keep: Callable[[str, dict[str, torch.Tensor]], None] | None = None,
    model_rate: int | None = None,
) -> dict[str, Any]:
    """Separate and score ``songs`` (at ``sample_rate``; a single model at another ``model_rate`` separates each
    one as `sepray separate` does: resampled to its rate and back, the band above its Nyquist frequency added to
    the accompaniment) -> {"songs": {name: {source: sdr}}, "median": {source: sdr}, "baselines":
    {baseline: {source: median sdr}}, "song_baselines": {baseline: {name: {source: sdr}}}, "x_realtime":
    seconds of audio separated per second of separation (scoring not included)}; with ``metric="bss_eval_v3"``
    also "bss_eval_v3": {"metric", "songs": {name: {source: {"sdr", "sir", "sar", "nsdr", "mix_sdr"}}},
    "seconds": {name: length}, "gnsdr" / "gsir" / "gsar" / "gsdr": {source: length-weighted mean}}.

    ``model`` is a single model or an ensemble (:func:`sepray.ensemble.members.separate_any`); ``separate(song)``,
    when given, makes each song's estimates {source: (C, T)} instead. ``keep(song name, estimates)`` is called
    with every song's estimates (a sweep keeps its members' to combine into its ensemble's)."""
    if metric not in names.TEST_METRICS:
        raise UsageError(f"metric {metric!r}: expected one of {list(names.TEST_METRICS)}")
    per_song: dict[str, dict[str, float]] = {}
    bss_songs: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    base: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names.BASELINES}
    audio_seconds = separate_seconds = 0.0
    for song in songs:
        started = time.perf_counter()
        if separate is not None:
            est = separate(song)
        elif model_rate is not None and model_rate != sample_rate:
            est = separate_song(model, song.mix, sample_rate, model_rate, chunk_seconds, device)
        else:
            est = separate_any(model, song.mix, chunk_seconds, sample_rate, device)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        separate_seconds += time.perf_counter() - started
        audio_seconds += song.mix.shape[-1] / sample_rate
        if keep is not None:
            keep(song.name, est)
        refs = torch.stack([song.sources[s] for s in SOURCES])
        ests = torch.stack([est[s] for s in SOURCES])
        per_song[song.name] = _medians(metrics.sdr_frames(refs, ests, sample_rate))
        mix = song.mix.unsqueeze(0).expand_as(refs)
        for name, trivial in metrics.trivial_estimates(mix).items():
            base[name][song.name] = _medians(metrics.sdr_frames(refs, trivial, sample_rate))
        if metric == names.BSS_EVAL_V3:
            bss_songs[song.name] = score_clip(SOURCES, refs, ests, song.mix)
            seconds[song.name] = song.mix.shape[-1] / sample_rate
    result = {
        "metric": METRIC_NOTE,
        "songs": per_song,
        "median": _over_songs(per_song),
        "baselines": {name: _over_songs(v) for name, v in base.items()},
        "song_baselines": base,
        "x_realtime": audio_seconds / separate_seconds if separate_seconds > 0 else float("nan"),
    }
    if metric == names.BSS_EVAL_V3:
        result[names.BSS_EVAL_V3] = {
            "metric": scoring_v3.METRIC,
            "songs": bss_songs,
            "seconds": seconds,
            **global_scores(bss_songs, seconds),
        }
    return result


def _global_metrics(result: dict[str, Any], split: str) -> dict[str, float]:
    """``test_gnsdr_vocals`` ... of a bss_eval_v3 evaluation ({} otherwise), ``test_gnsdr`` = mean over sources."""
    bss = result.get(names.BSS_EVAL_V3)
    if not bss:
        return {}
    values = {names.global_metric(split, g, s): bss[g][s] for g in names.BSS_GLOBALS for s in SOURCES}
    values[names.global_metric(split, "gnsdr")] = nanmean([bss["gnsdr"][s] for s in SOURCES])
    return values


def _medians(frames: np.ndarray) -> dict[str, float]:
    med = metrics.median_sdr(frames)
    return {s: float(med[i]) for i, s in enumerate(SOURCES)}


def _over_songs(per_song: dict[str, dict[str, float]]) -> dict[str, float]:
    return {s: nanmedian([v[s] for v in per_song.values()]) for s in SOURCES}


def format_evaluation(result: dict[str, Any]) -> str:
    """A plain-text table of per-song SDR, the median, and the trivial baselines."""
    width = max([len("median over songs")] + [len(n) for n in result["songs"]])
    head = f"{'song':<{width}}  " + "  ".join(f"{s:>13}" for s in SOURCES)
    lines = [result["metric"], head, "-" * len(head)]
    for name, vals in result["songs"].items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{vals[s]:>13.2f}" for s in SOURCES))
    lines.append("-" * len(head))
    rows = [("median over songs", result["median"])]
    rows += [(f"baseline: {k}", v) for k, v in result["baselines"].items()]
    for label, vals in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{vals[s]:>13.2f}" for s in SOURCES))
    bss = result.get(names.BSS_EVAL_V3)
    if bss:
        total = sum(bss["seconds"].values())
        lines += ["", f"{bss['metric']}: length-weighted over {len(bss['songs'])} songs ({total:.1f} s)"]
        for name in names.BSS_GLOBALS:
            vals = bss[name]
            lines.append(f"{name.upper():<{width}}  " + "  ".join(f"{vals[s]:>13.2f}" for s in SOURCES))
    return "\n".join(lines)


def evaluate_run(
    run_id: str,
    data_path: str | os.PathLike | None = None,
    split: str = "test",
    uri: str | None = None,
    device: str = "auto",
    chunk_seconds: float | None = None,
    log: bool = True,
    metric: str = names.MUSEVAL_V4,
    keep: Callable[[str, dict[str, torch.Tensor]], None] | None = None,
    sample_rate: int | None = None,
) -> dict[str, Any]:
    """Evaluate run ``run_id``'s model (or ensemble) on ``split`` of its own data config (or of ``data_path``),
    the songs at ``sample_rate`` (default: the run's ``data.eval_sample_rate``, else the model's rate).

    Logs ``<split>_sdr_<source>`` metrics (plus ``<split>_sdr`` mean and the baselines) and an
    ``evaluation/<split>_sdr.json`` + ``.txt`` table to the run (:func:`log_evaluation`); with
    ``metric="bss_eval_v3"`` also ``<split>_gnsdr_<source>``, ``_gsir_``, ``_gsar_``, ``_gsdr_`` and
    ``<split>_gnsdr`` (mean over sources), the per-song scores in the same JSON. ``keep``: see
    :func:`evaluate_songs`. Returns the result dict.
    """
    from sepray import tracking
    from sepray.device import resolve_device

    dev = resolve_device(device)
    model, info = load_run_separator(run_id, dev, uri)
    cfg = run_config_from_dict(tracking.load_run_config(run_id, uri), f"run {run_id}: run_config.json")
    rate = sample_rate or cfg.data.eval_sample_rate or info.sample_rate
    if rate <= 0:
        raise UsageError(f"sample rate {rate}: expected a rate > 0 in Hz")
    data, songs = split_songs(cfg.data, rate, split, data_path)
    chunk = chunk_seconds or cfg.train.eval_chunk_seconds
    # an ensemble resamples each member itself
    model_rate = None if isinstance(model, Ensemble) else info.sample_rate
    result = evaluate_songs(model, songs, rate, dev, chunk, metric, keep=keep, model_rate=model_rate)
    result.update({"run_id": run_id, "split": split, "data": data.describe(), "sample_rate": rate})
    if log:
        log_evaluation(tracking.attach_run(run_id, uri), result, split)
    return result


def split_songs(data, sample_rate: int, split: str, data_path: str | os.PathLike | None = None):
    """The songs of ``split`` of a run's data config (or of another copy of its data set at ``data_path``) at
    ``sample_rate`` -> (the data config used, songs); UsageError when the split is unknown or has no songs."""
    if data_path is not None:
        if not is_uri(str(data_path)) and not Path(data_path).exists():
            raise MissingFileError(f"{data_path}: no such dataset folder")
        # another copy of the run's data set: its layout is detected again; a single root's split (a split
        # file, mir1k-standard) still applies, a list of roots' do not
        split_rule = data.split if isinstance(data.path, str) else "auto"
        data = dataclasses.replace(
            data, path=str(data_path), layout="auto", split=split_rule, eval_corpus=None
        )
    if data.sample_rate != sample_rate:
        data = dataclasses.replace(data, sample_rate=sample_rate)
    if split not in SPLITS:
        raise UsageError(f"--split {split!r}: expected one of {sorted(SPLITS)}")
    songs = load_splits(data, (split,))[split]
    if not songs:
        raise UsageError(f"{data.describe()}: the {split} split has no songs")
    return data, songs


def log_evaluation(run, result: dict[str, Any], split: str) -> None:
    """Log an evaluation's metrics (``<split>_sdr_<source>``, the mean, the speed, the baselines, the BSS Eval
    v3 means) and its ``evaluation/<split>_sdr.json`` + ``.txt`` to ``run`` (a :class:`sepray.tracking.Run`)."""
    values = {names.sdr_metric(split, s): v for s, v in result["median"].items()}
    values[names.sdr_metric(split)] = nanmean(list(result["median"].values()))
    values[names.x_realtime_metric(split)] = result["x_realtime"]
    for name, vals in result["baselines"].items():
        values.update({names.sdr_metric(split, s, name): v for s, v in vals.items()})
    values.update(_global_metrics(result, split))
    run.log_metrics(values)
    run.log_text(json.dumps(json_safe(result), indent=2) + "\n", names.evaluation_artifact(split))
    run.log_text(format_evaluation(result) + "\n", names.evaluation_artifact(split, "txt"))
