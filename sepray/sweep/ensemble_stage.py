"""A sweep's ensemble stage, after the test stage (``ensemble`` spec section; on by default when ``top_k >= 2``).

The evaluated trials with a ``select`` value, best first, become the members of one ensemble
(:func:`sepray.ensemble.build.ensemble_run`: weights fitted on the full validation songs for ``select``'s source,
or every source for ``test_sdr``), logged as a child run of the sweep's parent (kind "ensemble"). It is evaluated
on the test songs like a trial (``test_metric``), combining the members' test estimates that the test stage kept
(:class:`KeptEstimates`) rather than separating the test songs again; its ``test_x_realtime`` is what running
every member costs, ``1 / sum(1 / x_i)`` of the members'. Then it is compared with the best single trial on the
same test songs (paired bootstrap of the per-song ``select`` score, :mod:`sepray.sweep.report_stats`): it wins
only when the 95 % interval of the mean difference lies above 0; otherwise the sweep says so in one line and the
trial stays the winner. No Ray here.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sepray import SOURCES, names, tracking
from sepray.ensemble.build import Built, ensemble_run
from sepray.evaluate import evaluate_songs, log_evaluation, split_songs
from sepray.numbers import is_finite
from sepray.sweep.objectives import select_parts, select_value, test_metric_of
from sepray.sweep.report_stats import DISTINGUISHABLE, paired_comparison
from sepray.sweep.song_scores import run_song_scores, song_scores, song_values


class KeptEstimates:
    """The members' test estimates, kept on disk (one ``(S, C, T)`` float32 tensor file per run and song, in a
    temporary folder) while the test stage separates the test songs, for the ensemble to combine."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[tuple[str, str], Path] = {}

    def keeper(self, run_id: str) -> Callable[[str, dict[str, torch.Tensor]], None]:
        """The ``keep(song name, {source: (C, T)})`` callback for run ``run_id``'s evaluation."""

        def keep(song: str, estimates: dict[str, torch.Tensor]) -> None:
            path = self.folder / run_id / f"{len(self.files)}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(torch.stack([estimates[s] for s in SOURCES]).contiguous(), path)
            self.files[(run_id, song)] = path

        return keep

    def get(self, run_id: str, song: str, shape: tuple[int, ...]) -> dict[str, torch.Tensor] | None:
        """Run ``run_id``'s kept estimates of ``song`` when they have the mixture's ``shape`` (C, T), else None."""
        path = self.files.get((run_id, song))
        if path is None:
            return None
        stacked = torch.load(path, weights_only=True)
        return {s: stacked[i] for i, s in enumerate(SOURCES)} if tuple(stacked.shape[1:]) == shape else None


@contextlib.contextmanager
def kept_estimates(spec) -> Iterator[KeptEstimates | None]:
    """A :class:`KeptEstimates` for the test stage when the sweep builds an ensemble (None when it does not)."""
    if not spec.ensemble.active(spec.top_k):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="sepray-kept-estimates-") as tmp:
        yield KeptEstimates(Path(tmp))


@dataclass(frozen=True)
class EnsembleOutcome:
    """The stage's result: the ensemble's run, whether it is the sweep's winner, and the line that says why."""

    run_id: str
    wins: bool
    line: str


def sweep_ensemble(
    spec, parent_run_id: str, uri: str, evaluated: list[dict[str, Any]], best, kept, log=print
) -> EnsembleOutcome | None:
    """Build, evaluate and judge the ensemble of the ``evaluated`` trials (ranked rows; ``best`` the best single
    trial); None when the sweep builds none (off, or fewer than two members)."""
    if not spec.ensemble.active(spec.top_k):
        return None
    members = [r for r in evaluated if math.isfinite(select_value(r, spec.select))]
    members.sort(key=lambda r: -select_value(r, spec.select))
    if best is None or len(members) < 2:
        log(
            f"ensemble: none: it needs two evaluated trials with a {spec.select}, this sweep has {len(members)}"
        )
        return None
    ids = [r["run_id"] for r in members]
    for run in tracking.child_runs(spec.name, parent_run_id, uri, kind=names.ENSEMBLE):  # a finish run again
        tags = run.data.tags
        if run.info.status == "FINISHED" and tags.get(names.MEMBERS) == ",".join(ids):
            wins = (run.data.metrics.get(names.ENSEMBLE_GAIN_LOW) or 0.0) > 0
            return EnsembleOutcome(run.info.run_id, wins, tags.get(names.ENSEMBLE_VERDICT, ""))
    started = time.perf_counter()
    _, _, source = select_parts(spec.select)
    labels = " + ".join(f"#{r['rank']}" for r in members)
    options = {"sources": (source,) if source else SOURCES, "experiment": spec.name, "uri": uri, "log": log}
    options |= {"run_name": f"ensemble of {labels}", "parent_run_id": parent_run_id}
    with ensemble_run(ids, spec.ensemble.weights, tags={names.SWEEP: spec.name}, **options) as built:
        result = _evaluate(built, members, spec, kept)
        log_evaluation(built.run, result, "test")
        weights = ", ".join(
            f"#{r['rank']} {w:.2f}" for r, w in zip(members, built.ensemble.weights, strict=True)
        )
        line, gain = _judge(spec, result, best, uri)
        line = f"ensemble of {labels} (run {built.run.run_id}, weights {weights}): {line}"
        built.run.set_tags({names.ENSEMBLE_VERDICT: line})
        built.run.log_metrics(gain)
    log(line)
    log(f"the ensemble stage took {time.perf_counter() - started:.1f} s (weights, package, test scores)")
    return EnsembleOutcome(built.run.run_id, (gain.get(names.ENSEMBLE_GAIN_LOW) or 0.0) > 0, line)


def _evaluate(
    built: Built, members: list[dict[str, Any]], spec, kept: KeptEstimates | None
) -> dict[str, Any]:
    """The ensemble's test evaluation, each member's estimates taken from ``kept`` where its evaluation made them
    at the ensemble's rate (else separated now)."""
    from sepray.device import resolve_device

    ensemble, rate = built.ensemble, built.ensemble.sample_rate
    device = resolve_device("auto")
    data, songs = split_songs(built.config.data, rate, "test")
    chunk = built.config.train.eval_chunk_seconds

    def separate(song) -> dict[str, torch.Tensor]:
        known = [
            kept.get(r["run_id"], song.name, tuple(song.mix.shape))
            if kept is not None and info.sample_rate == rate
            else None
            for r, (_, info) in zip(members, ensemble.members, strict=True)
        ]
        return ensemble.separate_song(song.mix, rate, chunk, device, known)

    result = evaluate_songs(ensemble, songs, rate, device, chunk, test_metric_of(spec), separate=separate)
    speeds = [r.get(names.x_realtime_metric("test")) for r in members]
    finite = all(is_finite(x) and float(x) > 0 for x in speeds)
    result["x_realtime"] = 1.0 / sum(1.0 / float(x) for x in speeds) if finite else math.nan
    result.update({"run_id": built.run.run_id, "split": "test", "data": data.describe()})
    return result


def _judge(spec, result: dict[str, Any], best: dict[str, Any], uri: str) -> tuple[str, dict[str, float]]:
    """The ensemble against the best single trial on the same test songs -> (the sentence, the gain metrics)."""
    split, _, source = select_parts(spec.select)
    value = select_value(_result_row(result), spec.select)
    head = f"{spec.select} {value:.2f} dB"
    if split != "test":
        return f"{head}; select is a validation metric: not compared, #{best['rank']} stays the winner", {}
    scores, lengths = song_scores(result, spec.select)
    best_scores, _ = run_song_scores(best["run_id"], uri, spec.select)
    comparison = paired_comparison(
        song_values(scores, source), song_values(best_scores, source), weights=lengths or None
    )
    d = comparison.mean_difference
    if comparison.songs < 2:
        return f"{head}; {comparison.verdict}: #{best['rank']} stays the winner", {}
    better = comparison.verdict == DISTINGUISHABLE and d.value > 0
    verdict = "better" if better else "worse" if comparison.verdict == DISTINGUISHABLE else comparison.verdict
    text = (
        f"{head}, {d.value:+.2f} dB per song over #{best['rank']} (the best single trial), 95 % interval "
        f"[{d.low:+.2f}, {d.high:+.2f}] over {comparison.songs} test songs (paired bootstrap): {verdict}, so "
        + ("the ensemble is the winner" if better else f"#{best['rank']} stays the winner")
    )
    gain = {names.ENSEMBLE_GAIN: d.value, names.ENSEMBLE_GAIN_LOW: d.low, names.ENSEMBLE_GAIN_HIGH: d.high}
    return text, gain


def _result_row(result: dict[str, Any]) -> dict[str, float]:
    """An evaluation result's test values by metric name (``test_sdr_vocals``, ``test_gnsdr_vocals``, ...)."""
    row = {names.sdr_metric("test", s): v for s, v in result["median"].items()}
    bss = result.get(names.BSS_EVAL_V3) or {}
    row |= {
        names.global_metric("test", g, s): bss[g][s] for g in names.BSS_GLOBALS if g in bss for s in SOURCES
    }
    return row
