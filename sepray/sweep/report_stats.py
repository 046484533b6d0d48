"""The statistics of the sweep report: spread over songs, bootstrap intervals, the paired best-vs-runner-up test.

Songs are the unit: a trial's test SDR is the median over songs of each song's median over 1 s frames, so the
intervals resample songs. Two trials evaluated on the same test songs are compared per song (paired): the
difference is "distinguishable" when the 95 % bootstrap interval of its mean excludes 0, else "within noise".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 0
DISTINGUISHABLE = "distinguishable"
WITHIN_NOISE = "within noise"


@dataclass(frozen=True)
class Interval:
    """A statistic over songs with its 95 % bootstrap interval (NaN bounds when there are < 2 songs)."""

    value: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 2) -> str:
        if not math.isfinite(self.value):
            return "-"
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _finite(values) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def bootstrap_interval(
    values, statistic=np.median, resamples: int = RESAMPLES, seed: int = SEED, weights=None
) -> Interval:
    """``statistic`` of the finite ``values`` and its 95 % percentile bootstrap interval (resampling values).

    With ``weights`` (one per value, e.g. song lengths) the statistic is the weighted mean (GNSDR's), and each
    resample carries its values' weights.
    """
    if weights is None:
        x, w = _finite(values), None
    else:
        pairs = [(v, wt) for v, wt in zip(values, weights, strict=True) if v is not None and math.isfinite(v)]
        x, w = np.asarray([p[0] for p in pairs], dtype=float), np.asarray([p[1] for p in pairs], dtype=float)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)

    def of(picks: np.ndarray) -> np.ndarray:  # (R, n) indices of resampled values -> (R,) statistics
        return statistic(x[picks], axis=1) if w is None else (w[picks] * x[picks]).sum(1) / w[picks].sum(1)

    value = float(of(np.arange(x.size)[None, :])[0])
    if x.size < 2:
        return Interval(value, math.nan, math.nan, int(x.size))
    rng = np.random.default_rng(seed)
    stats = of(rng.integers(0, x.size, size=(resamples, x.size)))
    low, high = np.percentile(stats, [2.5, 97.5])
    return Interval(value, float(low), float(high), int(x.size))


def spread(values) -> tuple[float, float]:
    """(min, max) of the finite values: the per-song spread."""
    x = _finite(values)
    return (float(x.min()), float(x.max())) if x.size else (math.nan, math.nan)


@dataclass(frozen=True)
class Comparison:
    """Best minus runner-up on the songs both were scored on: mean per-song difference, its interval, verdict."""

    mean_difference: Interval
    songs: int
    verdict: str  # DISTINGUISHABLE | WITHIN_NOISE | "not comparable: ..."

    def text(self) -> str:
        if self.songs < 2:
            return self.verdict
        d = self.mean_difference
        return (
            f"{self.verdict}: best minus runner-up {d.value:+.2f} dB per song on average, 95 % interval "
            f"[{d.low:+.2f}, {d.high:+.2f}] over {self.songs} test songs (paired bootstrap)"
        )


def paired_comparison(
    best: dict[str, float],
    other: dict[str, float],
    resamples: int = RESAMPLES,
    seed: int = SEED,
    weights: dict[str, float] | None = None,
) -> Comparison:
    """Paired bootstrap of the per-song difference ``best[song] - other[song]`` over the songs both have; its
    mean, weighted by ``weights[song]`` (song lengths, for GNSDR) when given."""
    songs = sorted(
        s
        for s in set(best) & set(other)
        if best[s] is not None and other[s] is not None and math.isfinite(best[s]) and math.isfinite(other[s])
    )
    if len(songs) < 2:
        nan = Interval(math.nan, math.nan, math.nan, len(songs))
        return Comparison(nan, len(songs), f"not comparable: {len(songs)} common test song(s) with a score")
    diff = [best[s] - other[s] for s in songs]
    song_weights = [weights[s] for s in songs] if weights is not None else None
    interval = bootstrap_interval(diff, np.mean, resamples, seed, song_weights)
    excludes_zero = interval.low > 0 or interval.high < 0
    return Comparison(interval, len(songs), DISTINGUISHABLE if excludes_zero else WITHIN_NOISE)


MIN_TRIALS_FOR_IMPORTANCE = 4


def param_importance(
    points: list[tuple[dict[str, object], float]], mode: str = "max"
) -> tuple[dict[str, float], str]:
    """Optuna's parameter importance (fANOVA, seeded) of the searched values -> (importances, note).

    ``points`` are (searched values, metric) per trial; a study is rebuilt from them with
    ``optuna.trial.create_trial``. Numbers become int / float distributions over the observed range (log
    scale when the range spans more than a decade), anything else a categorical one; a parameter with one
    observed value is left out. Too few trials or nothing that varies: ({}, the reason).
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    points = [(p, float(v)) for p, v in points if v is not None and math.isfinite(float(v))]
    if len(points) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, (
            f"parameter importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} trials with a metric value; "
            f"this sweep has {len(points)}"
        )
    keys = [k for k in points[0][0] if all(k in p for p, _ in points)]  # active in every trial
    distributions: dict[str, object] = {}
    for key in keys:
        values = [p[key] for p, _ in points]
        if len({repr(v) for v in values}) < 2:
            continue
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            distributions[key] = IntDistribution(min(values), max(values))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            low, high = float(min(values)), float(max(values))
            distributions[key] = FloatDistribution(low, high, log=low > 0 and high / low > 10)
        else:
            distributions[key] = CategoricalDistribution(sorted({repr(v) for v in values}))
    if not distributions:
        return {}, "no searched parameter took more than one value in every trial: no importance to compute"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line in the output
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for params, value in points:
        values = {
            k: repr(params[k]) if isinstance(d, CategoricalDistribution) else params[k]
            for k, d in distributions.items()
        }
        study.add_trial(optuna.trial.create_trial(params=values, distributions=distributions, value=value))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=SEED)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    note = f"Optuna fANOVA importance of the searched values for the metric, over {len(points)} trials"
    return {k: float(v) for k, v in importances.items()}, note
