"""The test stage's ranking and selection: which finished trials are evaluated, which one wins, the row order."""

from __future__ import annotations

import math
from types import SimpleNamespace

from sepray.sweep.leaderboard import choose_best, format_leaderboard, rank, select_value, top_k

NAN = math.nan


def _spec(**kw):
    base = {"name": "s", "metric": "valid_sdr_vocals", "mode": "max", "select": "test_sdr_vocals", "top_k": 2}
    base.update(kw)
    return SimpleNamespace(params=(), **base)


def _row(run_id, outcome="finished", valid=NAN, vocals=NAN, accompaniment=NAN):
    return {
        "run_id": run_id,
        "model": "waveunet",
        "outcome": outcome,
        "epochs": 2,
        "valid_sdr_vocals": valid,
        "test_sdr_vocals": vocals,
        "test_sdr_accompaniment": accompaniment,
        "num_parameters": 1000,
        "train_seconds": 1.0,
    }


def test_top_k_takes_finished_rows_by_validation_metric():
    rows = [
        _row("a", valid=1.0),
        _row("b", valid=3.0),
        _row("c", outcome="stopped_early", valid=9.0),  # never evaluated: it did not finish its budget
        _row("d", valid=NAN),  # no value: last
        _row("e", valid=2.0),
    ]
    assert [r["run_id"] for r in top_k(rows, _spec())] == ["b", "e"]
    assert [r["run_id"] for r in top_k(rows, _spec(top_k=5))] == ["b", "e", "a", "d"]
    assert [r["run_id"] for r in top_k(rows, _spec(mode="min", metric="valid_sdr_vocals"))] == ["a", "e"]


def test_best_is_chosen_by_select_on_the_test_songs_not_by_validation():
    evaluated = [_row("a", valid=5.0, vocals=3.0, accompaniment=9.0), _row("b", valid=1.0, vocals=4.0)]
    assert choose_best(evaluated, _spec())["run_id"] == "b"
    assert choose_best(evaluated, _spec(select="test_sdr_accompaniment"))["run_id"] == "a"
    # test_sdr: the mean over the sources that have a value
    assert select_value(evaluated[0], "test_sdr") == 6.0
    assert choose_best([_row("x"), _row("y")], _spec()) is None  # nothing evaluated: no best


def test_rank_puts_evaluated_rows_first_and_marks_the_best():
    rows = [
        _row("stopped", outcome="stopped_early", valid=0.5),
        _row("valid-only", valid=4.0),
        _row("second", valid=1.0, vocals=2.0),
        _row("first", valid=0.0, vocals=7.0),
    ]
    spec = _spec()
    best = choose_best([r for r in rows if not math.isnan(r["test_sdr_vocals"])], spec)
    ranked = rank(rows, spec, best)
    assert [r["run_id"] for r in ranked] == ["first", "second", "valid-only", "stopped"]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert [r["best"] for r in ranked] == [True, False, False, False]
    text = format_leaderboard(ranked, spec)
    assert "1*" in text and text.count("*") == 2  # the row mark and the legend
