"""The test stage's ranking and selection: which trials with a model (finished, or cut by a time limit) are
evaluated, which one wins, the row order, the winner line and why a sweep has no best model."""

from __future__ import annotations

import math
from types import SimpleNamespace

from sepray.sweep.leaderboard import (
    choose_best,
    format_leaderboard,
    no_best_reason,
    rank,
    select_value,
    top_k,
    winner_line,
)

NAN = math.nan


def _spec(**kw):
    base = {"name": "s", "metric": "valid_sdr_vocals", "mode": "max", "select": "test_sdr_vocals", "top_k": 2}
    base.update(kw)
    budget = SimpleNamespace(sweep_seconds=420.0, trial_seconds=None)
    return SimpleNamespace(params=(), epochs=8, budget=budget, **base)


def _row(
    run_id, outcome="finished", valid=NAN, vocals=NAN, accompaniment=NAN, status=None, epochs=2, cut_by=""
):
    return {
        "run_id": run_id,
        "model": "waveunet",
        "outcome": outcome,
        "status": status or ("FINISHED" if outcome == "finished" else "KILLED"),
        "epochs": epochs,
        "cut_by": cut_by,
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


def test_top_k_takes_trials_cut_by_a_time_limit_that_kept_a_model():
    rows = [
        _row("finished", valid=5.0),
        _row("cut", outcome="cut_by_time", status="FINISHED", valid=7.0, epochs=7),  # its last epoch's model
        _row("cut-no-model", outcome="cut_by_time", status="KILLED", valid=NAN, epochs=0),
        _row("asha", outcome="stopped_early", valid=9.0),  # ASHA's: no model package
        _row("failed", outcome="failed", status="FAILED", valid=8.0),
        _row("running", outcome="running", status="RUNNING", valid=8.5),
    ]
    assert [r["run_id"] for r in top_k(rows, _spec(top_k=5))] == ["cut", "finished"]
    only_cut = [_row("a", outcome="cut_by_time", status="FINISHED", valid=1.0, epochs=1)]
    assert [r["run_id"] for r in top_k(only_cut, _spec())] == ["a"]


def test_the_winner_line_says_when_a_time_limit_cut_it():
    spec = _spec()
    cut = _row(
        "abc", outcome="cut_by_time", status="FINISHED", vocals=8.25, epochs=7, cut_by="budget.sweep_seconds"
    )
    cut["train_seconds"] = 383.24
    line = winner_line(cut, spec, "1")
    assert line.startswith("best: run abc (waveunet), test_sdr_vocals = 8.25 dB")
    assert line.endswith(
        "registered as model 's' version 1; cut by the time limit (budget.sweep_seconds = 420 s) after epoch 7 "
        "of 8, 383.2 s of training"
    )
    spec.budget.trial_seconds = 30.0
    trial_cut = {**cut, "cut_by": "budget.trial_seconds", "epochs": 3}
    assert "(budget.trial_seconds = 30 s) after epoch 3 of 8" in winner_line(trial_cut, spec, "2")
    assert "cut" not in winner_line(_row("f", vocals=8.0), spec, "3")


def test_no_best_reason_names_what_went_wrong():
    never = [
        _row("a", outcome="cut_by_time", epochs=0),
        _row("b", outcome="failed", status="FAILED", epochs=0),
    ]
    assert no_best_reason(never, [], _spec()) == (
        "no trial completed an epoch (trials (one per configuration): 1 cut_by_time, 1 failed)"
    )
    diverged = [_row("a", outcome="failed", status="FAILED", epochs=3)]
    assert no_best_reason(diverged, [], _spec()).startswith("no trial has a model: ")
    assert no_best_reason(diverged, [_row("x")], _spec()).startswith(
        "no evaluated trial has a finite test_sdr_vocals"
    )
