"""How an ensemble combines its members' estimates, and how its weights are fitted (pure tensor / array code).

Combination (:func:`combine`): one weight per member, on the simplex (``w_i >= 0``, ``sum w_i = 1``); per source
the estimate is the weighted average ``sum_i w_i e_i`` of the members' estimates of that source, then the
residual ``mix - sum over sources`` is split equally between the sources (the mixture-consistency projection of
Wisdom et al., ICASSP 2019, with equal weights), so the ensemble's estimates always sum to the mixture. For
members whose estimates already sum to the mixture (every member, through ``sepray separate``'s full band, and
``spec_unet`` / a ``difference`` Wave-U-Net everywhere) the residual is zero. Why one weight vector for every
source rather than one per source: with the projection, two sources' weights ``w^v`` and ``w^a`` give the same
estimates as the single vector ``(w^v + w^a) / 2`` (the accompaniment is the mixture minus the vocals), so
per-source weights would only look like more freedom.

Fitting (:func:`fit_weights`): maximise, on the validation songs, the mean over the fitted sources (the sweep's
``select`` source, or every source) of the mean over songs of each song's museval v4 SDR (median over 1 s
frames) of the combined estimates. The mean over songs rather than the median: with the few validation songs a
sweep has, a median follows one song. In a frame, the combination's error is ``sum_i w_i d_i`` with
``d_i = e_i - s`` (the weights sum to one), so its energy is ``w^T D w``, ``D`` the frame's Gram matrix of the
members' errors: :func:`frame_statistics` computes every frame's ``D`` once per song, and any weight vector is
then scored without touching audio. Search: every point of the simplex grid of step 1/20 for up to 4 members
(21 points for 2 members, 231 for 3, 1771 for 4); with more, a pairwise search (move weight from one member to
another in steps of 0.2 down to 0.025 while the score improves) from the best of the equal weights and the
single members. Deterministic; a member that only adds error gets weight 0.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from sepray.metrics import frame_bounds

GRID_STEPS = 20  # the simplex grid's step is 1 / GRID_STEPS
GRID_MAX_MEMBERS = 4  # exhaustive grid up to this many members, pairwise search beyond
PAIR_STEPS = (0.2, 0.1, 0.05, 0.025)
TINY = 1e-20  # error energy floor: a frame reproduced exactly scores 10*log10(signal / TINY), not inf


def combine(estimates: list[dict[str, torch.Tensor]], weights, mix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Members' estimates ``[{source: (C, T)}]`` -> the ensemble's ``{source: (C, T)}``: weighted average per
    source, then the residual ``mix`` (C, T) ``- sum over sources`` shared equally, so they sum to ``mix``."""
    if len(estimates) != len(weights) or not estimates:
        raise ValueError(f"{len(estimates)} members' estimates for {len(weights)} weights")
    sources = list(estimates[0])
    out = {s: sum(float(w) * est[s] for w, est in zip(weights, estimates, strict=True)) for s in sources}
    residual = (mix - sum(out.values())) / len(sources)
    return {s: out[s] + residual for s in sources}


@dataclass(frozen=True)
class FrameStatistics:
    """One song's frames, enough to score any weighting: ``signal`` (S, F) reference energy, ``gram`` (S, F, K, K)
    the members' error Gram matrices, ``valid`` (F,) frames where no reference is silent (museval's rule)."""

    signal: np.ndarray
    gram: np.ndarray
    valid: np.ndarray


def frame_statistics(
    references: torch.Tensor, estimates: torch.Tensor, mix: torch.Tensor, sample_rate: int
) -> FrameStatistics:
    """references (S, C, T), members' estimates (K, S, C, T), mix (C, T) -> the song's :class:`FrameStatistics`,
    museval's 1 s framing; the estimates are first projected to sum to the mixture, as :func:`combine` does."""
    refs = references.double().numpy()
    ests = estimates.double().numpy()
    ests = ests + (mix.double().numpy() - ests.sum(axis=1))[:, None] / ests.shape[1]  # (K, S, C, T)
    starts, stops = frame_bounds(refs.shape[-1], sample_rate)
    S, K, F = refs.shape[0], ests.shape[0], len(starts)
    signal, gram, valid = np.zeros((S, F)), np.zeros((S, F, K, K)), np.zeros(F, dtype=bool)
    for f, (a, b) in enumerate(zip(starts, stops, strict=True)):
        ref = refs[..., a:b]  # (S, C, n)
        err = ests[..., a:b] - ref  # (K, S, C, n)
        signal[:, f] = np.einsum("sct,sct->s", ref, ref)
        gram[:, f] = np.einsum("isct,jsct->sij", err, err)
        valid[f] = bool((ref.sum(axis=1) != 0).any(axis=-1).all())
    return FrameStatistics(signal, gram, valid)


def song_scores(stats: FrameStatistics, weights: np.ndarray) -> np.ndarray:
    """Each song's museval SDR for each weight vector: weights (P, K) -> (P, S), median over the valid frames
    (NaN for a song without one)."""
    error = np.einsum("pi,sfij,pj->psf", weights, stats.gram, weights)  # (P, S, F)
    with np.errstate(divide="ignore"):
        sdr = 10.0 * np.log10(stats.signal[None] / np.maximum(error, TINY))
    sdr = sdr[..., stats.valid]
    if sdr.shape[-1] == 0:
        return np.full(sdr.shape[:2], np.nan)
    return np.median(sdr, axis=-1)


def objective(songs: list[FrameStatistics], weights: np.ndarray, sources: list[int]) -> np.ndarray:
    """The fitted score of each weight vector (P, K) -> (P,): the mean over ``sources`` (indices) of the mean
    over songs of :func:`song_scores` (songs without a valid frame left out)."""
    per_song = np.stack([song_scores(s, weights)[:, sources] for s in songs])  # (N, P, S')
    with warnings.catch_warnings():  # NaN, without a warning, where no song has a valid frame
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.nanmean(per_song, axis=0), axis=-1)


def simplex_grid(members: int, steps: int = GRID_STEPS) -> np.ndarray:
    """Every weight vector with entries in multiples of 1/steps summing to one: (points, members)."""
    points = [
        c for c in itertools.product(range(steps + 1), repeat=members - 1) if sum(c) <= steps
    ]  # the first K - 1 entries; the last is what remains
    grid = np.array([[*c, steps - sum(c)] for c in points], dtype=float)
    return grid / steps


@dataclass(frozen=True)
class Fit:
    """Fitted weights (one per member, on the simplex), the score they reach, how they were searched, and each
    member's own score (weight 1 on it) for comparison."""

    weights: tuple[float, ...]
    score: float
    method: str
    member_scores: tuple[float, ...]


def fit_weights(songs: list[FrameStatistics], members: int, sources: list[int]) -> Fit:
    """The weights on the simplex that maximise :func:`objective` over ``songs`` (see the module docstring)."""
    if members < 1 or not songs:
        raise ValueError(f"need at least one member and one song, got {members} members, {len(songs)} songs")
    vertices = np.eye(members)
    member_scores = objective(songs, vertices, sources)
    if not np.isfinite(member_scores).any():
        raise ValueError("no validation frame with a score: every validation song is silent in some source")
    if members <= GRID_MAX_MEMBERS:
        grid = simplex_grid(members)
        scores = objective(songs, grid, sources)
        best = int(np.nanargmax(scores))
        weights, score, method = grid[best], float(scores[best]), f"simplex grid, step 1/{GRID_STEPS}"
    else:
        weights, score = _pairwise_search(
            songs, sources, np.vstack([np.full(members, 1 / members), vertices])
        )
        method = f"pairwise search, steps {' / '.join(map(str, PAIR_STEPS))}"
    weights = np.clip(weights, 0.0, None)
    weights = weights / weights.sum()
    return Fit(tuple(round(float(w), 6) for w in weights), score, method, tuple(map(float, member_scores)))


def _pairwise_search(songs, sources, starts: np.ndarray) -> tuple[np.ndarray, float]:
    """Hill climbing on the simplex from the best of ``starts`` (P, K): move ``step`` of weight (or all a member
    has) from member j to member i while some move improves the score, for each step in :data:`PAIR_STEPS`."""
    scores = objective(songs, starts, sources)
    best = int(np.nanargmax(scores))
    weights, score = starts[best].copy(), float(scores[best])
    K = len(weights)
    for step in PAIR_STEPS:
        improved = True
        while improved:
            moves = []
            for i, j in itertools.permutations(range(K), 2):
                amount = min(step, weights[j])
                if amount > 0:
                    w = weights.copy()
                    w[i] += amount
                    w[j] -= amount
                    moves.append(w)
            if not moves:
                break
            candidates = np.array(moves)
            values = objective(songs, candidates, sources)
            k = int(np.nanargmax(values))
            improved = math.isfinite(values[k]) and values[k] > score + 1e-9
            if improved:
                weights, score = candidates[k], float(values[k])
    return weights, score
