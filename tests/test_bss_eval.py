"""sepray.bss_eval against mir_eval.separation.bss_eval_sources (BSS Eval v3), and the NSDR / GNSDR arithmetic."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from sepray.bss_eval import bss_eval_sources, length_weighted_mean

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bss_eval_speed.py"
_spec = importlib.util.spec_from_file_location("bss_eval_speed", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

TOLERANCE_DB = 0.01  # the bound; the agreement measured here is ~1e-11 dB
# 20 clips: 20 lengths in 1.0 s .. 5.0 s at 16 kHz; the seed picks the error (mask noise, 8 kHz band limit,
# gain, broadband noise). Short, so that mir_eval's time stays small in the suite.
CLIPS = [(seed, round(1.0 + (seed * 0.61) % 4.0, 2)) for seed in range(20)]


@pytest.fixture(scope="module")
def separation():
    mir_eval = pytest.importorskip("mir_eval", reason="mir_eval is in the dev extra: pip install -e '.[dev]'")
    return mir_eval.separation


@pytest.fixture(scope="module")
def clips():
    return [bench.make_clip(seed, seconds) for seed, seconds in CLIPS]


def mir_eval_scores(separation, refs, ests, permutation=False):
    # one BLAS thread, as sepray uses: oversubscribed BLAS threads made this test 8x slower on a busy machine
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore")  # mir_eval 0.8 marks bss_eval_sources deprecated
        return separation.bss_eval_sources(refs, ests, compute_permutation=permutation)


def test_matches_mir_eval_on_20_clips_fixed_order_with_nsdr(separation, clips):
    lengths = {ref.shape[1] for ref, _, _ in clips}
    assert len(lengths) == 20 and min(lengths) < 1.5 * 16000 and max(lengths) > 4.5 * 16000
    worst = 0.0
    sdr_spread = []
    for index, (refs, ests, mix) in enumerate(clips):
        ours = bss_eval_sources(refs, ests, mixture=mix)
        sdr, sir, sar, perm = mir_eval_scores(separation, refs, ests)
        assert perm.tolist() == ours.perm.tolist() == [0, 1]
        pairs = [(sdr, ours.sdr), (sir, ours.sir), (sar, ours.sar)]
        if index % 4 == 0:  # the mixture's SDR (NSDR's reference point), on 5 of the clips
            mix_sdr = mir_eval_scores(separation, refs, np.stack([mix, mix]))[0]
            pairs.append((mix_sdr, ours.mix_sdr))
            np.testing.assert_allclose(ours.nsdr, sdr - mix_sdr, atol=TOLERANCE_DB)
        for theirs, mine in pairs:
            assert np.all(np.isfinite(mine))
            worst = max(worst, float(np.max(np.abs(theirs - mine))))
        sdr_spread.extend(sdr)
    assert worst < TOLERANCE_DB, f"largest difference from mir_eval: {worst:.3g} dB"
    assert max(sdr_spread) - min(sdr_spread) > 10  # the clips span a wide range of qualities


def test_permutation_mode_matches_mir_eval_default_and_swaps_a_swapped_separator(separation, clips):
    for refs, ests, _ in (clips[0], clips[7]):  # the two shortest
        swapped = ests[::-1].copy()  # a separator that put the vocals in the accompaniment and vice versa
        for estimates, expected_perm in ((ests, [0, 1]), (swapped, [1, 0])):
            sdr, sir, sar, perm = mir_eval_scores(separation, refs, estimates, permutation=True)
            ours = bss_eval_sources(refs, estimates, permutation=True)
            assert perm.tolist() == ours.perm.tolist() == expected_perm
            for theirs, mine in ((sdr, ours.sdr), (sir, ours.sir), (sar, ours.sar)):
                assert np.max(np.abs(theirs - mine)) < TOLERANCE_DB
        # fixed order keeps the swapped estimates where they were: the honest, bad score
        fixed = bss_eval_sources(refs, swapped)
        assert np.all(fixed.sdr < bss_eval_sources(refs, swapped, permutation=True).sdr)


def test_nsdr_is_sdr_gain_over_the_mixture_and_scale_invariant():
    refs, ests, mix = bench.make_clip(7, 2.0)
    scores = bss_eval_sources(refs, ests, mixture=mix)
    halved = bss_eval_sources(refs, 0.5 * ests, mixture=0.5 * mix)  # a 512-tap filter absorbs any gain
    np.testing.assert_allclose(halved.sdr, scores.sdr, atol=1e-9)
    np.testing.assert_allclose(halved.nsdr, scores.nsdr, atol=1e-9)
    mix_as_estimate = bss_eval_sources(refs, np.stack([mix, mix]), mixture=mix)
    np.testing.assert_allclose(mix_as_estimate.nsdr, 0.0, atol=1e-9)  # the mixture gains nothing on itself
    with pytest.raises(ValueError, match="NSDR needs the mixture"):
        _ = bss_eval_sources(refs, ests).nsdr


def test_edge_cases():
    refs, ests, _ = bench.make_clip(3, 1.0)
    perfect = bss_eval_sources(refs, refs)
    assert np.all(
        perfect.sdr > 100
    )  # an exact estimate: an error term of rounding size, or exactly zero (inf)
    silent_estimate = bss_eval_sources(refs, np.stack([np.zeros_like(ests[0]), ests[1]]))
    assert math.isnan(silent_estimate.sdr[0]) and np.isfinite(silent_estimate.sdr[1])
    with pytest.raises(ValueError, match="reference source 1 is silent"):
        bss_eval_sources(np.stack([refs[0], 0 * refs[1]]), ests)
    with pytest.raises(ValueError, match="differ"):
        bss_eval_sources(refs, ests[:, :-1])
    with pytest.raises(ValueError, match="at least 512 samples"):
        bss_eval_sources(refs[:, :100], ests[:, :100])
    with pytest.raises(ValueError, match="finite"):
        bss_eval_sources(refs, np.where(np.arange(refs.shape[1]) == 5, np.nan, ests))


def test_length_weighted_mean_weights_by_clip_length():
    # a 3 s clip at 10 dB and a 1 s clip at 0 dB: 7.5 dB, where the plain mean would say 5
    assert length_weighted_mean([10.0, 0.0], [3.0, 1.0]) == pytest.approx(7.5)
    assert length_weighted_mean([10.0, float("nan"), 0.0], [3.0, 5.0, 1.0]) == pytest.approx(
        7.5
    )  # NaN skipped
    assert math.isnan(length_weighted_mean([float("nan")], [2.0]))
    assert length_weighted_mean([float("inf"), 1.0], [1.0, 1.0]) == math.inf
    with pytest.raises(ValueError):
        length_weighted_mean([1.0, 2.0], [1.0])
