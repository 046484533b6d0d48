"""The report's statistics on constructed data: bootstrap intervals and the paired verdict."""

from __future__ import annotations

import math

import numpy as np

from sepray.sweep.report_stats import (
    DISTINGUISHABLE,
    WITHIN_NOISE,
    bootstrap_interval,
    paired_comparison,
    spread,
)


def test_bootstrap_interval_brackets_the_median_and_narrows_with_more_songs():
    rng = np.random.default_rng(1)
    few = bootstrap_interval(rng.normal(5.0, 1.0, 8))
    many = bootstrap_interval(rng.normal(5.0, 1.0, 200))
    for iv in (few, many):
        assert iv.low <= iv.value <= iv.high
    assert many.high - many.low < few.high - few.low
    assert 4.7 < many.value < 5.3 and many.n == 200


def test_bootstrap_interval_of_one_song_or_none_has_no_bounds():
    one = bootstrap_interval([3.0])
    assert one.value == 3.0 and math.isnan(one.low) and one.text() == "3.00"
    assert bootstrap_interval([math.nan, None]).text() == "-"
    assert spread([1.0, math.nan, -2.0, 4.0]) == (-2.0, 4.0)


def test_a_clear_per_song_difference_is_distinguishable():
    rng = np.random.default_rng(2)
    songs = [f"song{i}" for i in range(12)]
    base = rng.normal(4.0, 3.0, len(songs))  # songs differ a lot; the paired difference does not
    best = dict(zip(songs, base + 1.0 + rng.normal(0, 0.1, len(songs)), strict=True))
    other = dict(zip(songs, base, strict=True))
    result = paired_comparison(best, other)
    assert result.verdict == DISTINGUISHABLE and result.songs == 12
    assert 0.9 < result.mean_difference.value < 1.1 and result.mean_difference.low > 0
    assert "distinguishable" in result.text()


def test_no_difference_is_within_noise():
    rng = np.random.default_rng(3)
    songs = [f"song{i}" for i in range(12)]
    base = rng.normal(4.0, 3.0, len(songs))
    best = dict(zip(songs, base + rng.normal(0, 0.5, len(songs)), strict=True))
    other = dict(zip(songs, base + rng.normal(0, 0.5, len(songs)), strict=True))
    result = paired_comparison(best, other)
    assert result.verdict == WITHIN_NOISE
    assert result.mean_difference.low < 0 < result.mean_difference.high


def test_only_common_songs_are_paired():
    result = paired_comparison({"a": 1.0, "b": 2.0, "c": 5.0}, {"a": 0.0, "x": 9.0})
    assert result.songs == 1 and result.verdict.startswith("not comparable")


def test_param_importance_finds_the_parameter_that_matters():
    from sepray.sweep.report_stats import param_importance

    rng = np.random.default_rng(4)
    points = []
    for _ in range(24):
        lr, levels = float(10 ** rng.uniform(-4, -2)), int(rng.integers(2, 6))
        up = str(rng.choice(["linear", "learned"]))
        points.append(({"train.lr": lr, "model.levels": levels, "model.upsampling": up}, 3.0 * levels))
    importances, note = param_importance(points)
    assert max(importances, key=importances.get) == "model.levels" and "24 trials" in note
    assert param_importance(points[:2])[0] == {}
    constant = [({"model.levels": 3}, 1.0 + i) for i in range(5)]
    assert (
        param_importance(constant) == ({}, param_importance(constant)[1])
        and "no searched" in (param_importance(constant)[1])
    )
