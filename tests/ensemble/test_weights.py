"""Ensemble weights: the combination sums to the mixture, the fit stays on the simplex, scores exactly what
museval would, gives a useless member no weight and shares weight between members with independent errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepray import SOURCES
from sepray.ensemble.weights import (
    combine,
    fit_weights,
    frame_statistics,
    objective,
    simplex_grid,
    song_scores,
)
from sepray.metrics import median_sdr, sdr_frames

RATE = 1000  # 1 s frames of 1000 samples: small songs, many frames


def song(seconds: float = 6.0, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(references (S, C, T), mix (C, T)): two random sources and their exact sum."""
    g = torch.Generator().manual_seed(seed)
    refs = (
        torch.randn(len(SOURCES), channels, int(seconds * RATE), generator=g)
        * torch.tensor([0.3, 0.5])[:, None, None]
    )
    return refs, refs.sum(0)


def member(refs: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    """A member's estimates (S, C, T) that sum to the mixture: vocals = reference + noise, accompaniment = rest."""
    g = torch.Generator().manual_seed(seed)
    vocals = refs[0] + noise * torch.randn(refs[0].shape, generator=g)
    return torch.stack([vocals, refs.sum(0) - vocals])


def test_combination_is_the_weighted_average_made_to_sum_to_the_mixture():
    refs, mix = song(channels=2)
    g = torch.Generator().manual_seed(1)
    ests = [{s: torch.randn(mix.shape, generator=g) for s in SOURCES} for _ in range(3)]  # sum to nothing
    weights = (0.5, 0.3, 0.2)
    out = combine(ests, weights, mix)
    assert torch.allclose(out["vocals"] + out["accompaniment"], mix, atol=1e-6)
    average = {s: sum(w * e[s] for w, e in zip(weights, ests, strict=True)) for s in SOURCES}
    residual = (mix - average["vocals"] - average["accompaniment"]) / 2
    assert torch.allclose(out["vocals"], average["vocals"] + residual, atol=1e-6)
    # members that already sum to the mixture: exactly their weighted average
    exact = [{s: e[i] for i, s in enumerate(SOURCES)} for e in (member(refs, 0.1, 2), member(refs, 0.2, 3))]
    out = combine(exact, (0.25, 0.75), mix)
    assert torch.allclose(out["vocals"], 0.25 * exact[0]["vocals"] + 0.75 * exact[1]["vocals"], atol=1e-6)
    with pytest.raises(ValueError, match="2 members' estimates for 3 weights"):
        combine(exact, weights, mix)


def test_frame_statistics_score_what_museval_scores():
    """The fit's per-song score of any weighting equals the median framewise SDR of the combined estimates."""
    refs, mix = song(seconds=5.5, channels=2)
    members = torch.stack([member(refs, n, s) for n, s in ((0.1, 4), (0.3, 5), (0.2, 6))])
    stats = frame_statistics(refs, members, mix, RATE)
    weights = np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    scores = song_scores(stats, weights)  # (P, S)
    for p, w in enumerate(weights):
        est = combine([{s: m[i] for i, s in enumerate(SOURCES)} for m in members], w, mix)
        expected = median_sdr(sdr_frames(refs, torch.stack([est[s] for s in SOURCES]), RATE))
        np.testing.assert_allclose(scores[p], expected, atol=1e-9)


def test_the_simplex_grid_covers_the_simplex():
    grid = simplex_grid(3, steps=4)
    assert grid.shape == (15, 3)  # C(4 + 2, 2)
    assert np.allclose(grid.sum(1), 1.0) and (grid >= 0).all()
    assert len({tuple(p) for p in grid}) == len(grid)


@pytest.mark.parametrize("members", [2, 3, 5])
def test_a_useless_member_gets_no_weight(members):
    """One good member, one that returns noise; more members (5: the pairwise search) are less good copies."""
    stats = []
    for k in range(3):
        refs, mix = song(seed=k)
        good = member(refs, 0.05, 10 + k)
        useless = torch.stack([torch.randn(mix.shape), mix - torch.randn(mix.shape)])  # noise as vocals
        others = [member(refs, 0.4, 20 + k + j) for j in range(members - 2)]
        stats.append(frame_statistics(refs, torch.stack([good, useless, *others]), mix, RATE))
    fit = fit_weights(stats, members, [0])
    assert len(fit.weights) == members and abs(sum(fit.weights) - 1) < 1e-9 and min(fit.weights) >= 0
    assert fit.weights[1] == 0.0, fit
    assert fit.weights[0] >= 0.7, fit
    assert fit.score >= max(fit.member_scores) - 1e-9
    assert ("grid" if members <= 4 else "pairwise") in fit.method


def test_members_with_independent_errors_share_the_weight():
    """Two members whose errors are independent and equally large: the average halves the error energy, so the
    fit weighs them about equally and scores about 3 dB above either alone."""
    stats = []
    for k in range(4):
        refs, mix = song(seed=k)
        stats.append(
            frame_statistics(
                refs, torch.stack([member(refs, 0.1, 30 + k), member(refs, 0.1, 40 + k)]), mix, RATE
            )
        )
    fit = fit_weights(stats, 2, [0, 1])
    assert abs(fit.weights[0] - 0.5) <= 0.1, fit
    assert fit.score - max(fit.member_scores) == pytest.approx(3.0, abs=0.5)
    equal = objective(stats, np.array([[0.5, 0.5]]), [0, 1])[0]
    assert fit.score >= equal - 1e-9


def test_silent_validation_songs_cannot_be_fitted_on():
    refs, mix = song()
    refs[0] = 0.0  # no vocals anywhere: every frame is undefined (museval's rule)
    stats = frame_statistics(
        refs, torch.stack([member(refs, 0.1, 1), member(refs, 0.2, 2)]), refs.sum(0), RATE
    )
    assert not stats.valid.any()
    with pytest.raises(ValueError, match="no validation frame with a score"):
        fit_weights([stats], 2, [0])
