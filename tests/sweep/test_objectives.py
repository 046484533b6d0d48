"""The sweep's test metric: `test_metric` / `select` in specs (one-line errors naming the key), selection by
test GNSDR in the leaderboard, and the length-weighted bootstrap the report uses for it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from sepray.sweep.leaderboard import choose_best, format_leaderboard, leaderboard_columns, rank, select_value
from sepray.sweep.report_stats import bootstrap_interval, paired_comparison
from sepray.sweep.spec import SpecError, parse_spec
from tests.sweep.test_spec import BASE, LABEL

NAN = math.nan


def spec(**keys):
    return parse_spec({**BASE, **keys}, LABEL)


def test_select_by_gnsdr_implies_bss_eval_v3():
    assert spec(select="test_gnsdr_vocals").test_metric == "bss_eval_v3"
    chosen = spec(test_metric="bss_eval_v3")
    assert (chosen.select, chosen.test_metric) == ("test_gnsdr_vocals", "bss_eval_v3")  # the default select
    assert spec(test_metric="bss_eval_v3", target="accompaniment").select == "test_gnsdr_accompaniment"
    both = spec(test_metric="bss_eval_v3", select="test_sdr_vocals")  # museval is computed beside it
    assert (both.select, both.test_metric) == ("test_sdr_vocals", "bss_eval_v3")
    default = spec()
    assert (default.select, default.test_metric) == ("test_sdr_vocals", "museval_v4")  # unchanged
    overridden = parse_spec(BASE, LABEL, overrides=["select=test_gsir_accompaniment"])
    assert overridden.test_metric == "bss_eval_v3"


@pytest.mark.parametrize(
    "keys, expected",
    [
        (
            {"test_metric": "sdr_v5"},
            "sweeps/x.yaml: test_metric: 'sdr_v5': expected one of ['museval_v4', 'bss_eval_v3']",
        ),
        ({"select": "test_gnsdr_drums"}, "sweeps/x.yaml: select: 'test_gnsdr_drums': expected one of ["),
        ({"select": "test_nsdr_vocals"}, "sweeps/x.yaml: select: 'test_nsdr_vocals': expected one of ["),
        (
            {"select": "test_gnsdr_vocals", "test_metric": "museval_v4"},
            "sweeps/x.yaml: select: 'test_gnsdr_vocals' is a BSS Eval v3 score, but test_metric is museval_v4",
        ),
        ({"test_metric": 3}, "sweeps/x.yaml: test_metric: expected"),
    ],
)
def test_unknown_metric_names_are_one_line_errors_naming_the_key(keys, expected):
    with pytest.raises(SpecError) as exc:
        spec(**keys)
    message = str(exc.value)
    assert message.startswith(expected) and "\n" not in message


def _row(run_id, vocals=NAN, accompaniment=NAN, sdr=NAN, valid=1.0):
    return {
        "run_id": run_id, "model": "spec_unet", "outcome": "finished", "epochs": 2, "valid_sdr_vocals": valid,
        "test_sdr_vocals": sdr, "test_sdr_accompaniment": sdr, "test_gnsdr_vocals": vocals,
        "test_gnsdr_accompaniment": accompaniment, "num_parameters": 1000, "train_seconds": 1.0,
    }  # fmt: skip


def test_the_best_by_test_gnsdr_is_not_the_best_by_museval_sdr():
    board = SimpleNamespace(
        name="s", metric="valid_sdr_vocals", mode="max", select="test_gnsdr_vocals", top_k=2, params=(),
        test_metric="bss_eval_v3",
    )  # fmt: skip
    rows = [
        _row("a", vocals=5.0, accompaniment=9.0, sdr=8.0),
        _row("b", vocals=6.0, accompaniment=1.0, sdr=2.0),
    ]
    assert choose_best(rows, board)["run_id"] == "b"
    assert select_value(rows[0], "test_gnsdr") == 7.0  # the mean over sources
    assert choose_best(rows, SimpleNamespace(**{**vars(board), "select": "test_gnsdr"}))["run_id"] == "a"
    ranked = rank(rows, board, choose_best(rows, board))
    assert [r["run_id"] for r in ranked] == ["b", "a"] and ranked[0]["best"]
    assert "test_gnsdr_vocals" in leaderboard_columns(
        board
    ) and "test_gsar_accompaniment" in leaderboard_columns(board)
    text = format_leaderboard(ranked, board)
    assert "gnsdr vocal" in text and "BSS Eval v3" in text
    line = next(row for row in text.splitlines() if row.startswith("1*"))
    assert "6.00" in line.split() and "1.00" in line.split()
    museval = SimpleNamespace(**{**vars(board), "test_metric": "museval_v4", "select": "test_sdr_vocals"})
    assert "test_gnsdr_vocals" not in leaderboard_columns(museval) and "gnsdr" not in format_leaderboard(
        rows, museval
    )


def test_weighted_bootstrap_is_the_length_weighted_mean():
    values, lengths = [10.0, 0.0, 4.0, NAN], [3.0, 1.0, 2.0, 5.0]
    interval = bootstrap_interval(values, np.mean, weights=lengths, resamples=2000)
    assert interval.value == pytest.approx((30 + 0 + 8) / 6)  # 6.33, where the plain mean is 4.67
    assert interval.n == 3 and interval.low < interval.value < interval.high
    assert bootstrap_interval(values, np.mean).value == pytest.approx(14 / 3)
    # paired: the best wins big on a long song and loses a little on two short ones
    best, other = {"a": 9.0, "b": 1.0, "c": 1.0}, {"a": 1.0, "b": 2.0, "c": 2.0}
    weighted = paired_comparison(best, other, weights={"a": 10.0, "b": 1.0, "c": 1.0}, resamples=2000)
    assert weighted.mean_difference.value == pytest.approx((80 - 1 - 1) / 12)
    assert paired_comparison(best, other, resamples=2000).mean_difference.value == pytest.approx(2.0)
