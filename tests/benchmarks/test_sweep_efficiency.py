"""benchmarks/sweep_efficiency.py's curve: trial-steps summed in completion order, the pick by validation metric
among finished trials, its test SDR (synthetic leaderboard rows; no sweep runs here)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sweep_efficiency.py"
_spec = importlib.util.spec_from_file_location("sweep_efficiency", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def row(run_id, end, epochs, outcome, valid, test=None):
    return {
        "run_id": run_id,
        "end_time": end,
        "epochs": epochs,
        "outcome": outcome,
        "valid_sdr_vocals": valid,
        "test_sdr_vocals": test,
    }


def test_curve_counts_steps_in_completion_order_and_picks_by_validation():
    rows = [
        row("c", 30, 4, "finished", 2.0, 1.5),
        row("a", 10, 1, "stopped_early", 9.0),  # best validation, but stopped: never the pick
        row("b", 20, 4, "finished", 1.0, 3.0),
        row("d", 40, 2, "failed", None),
        row("e", 50, 4, "finished", 1.5, 4.0),  # better test, worse validation: not the pick
    ]
    points = bench.efficiency_curve(rows, steps_per_epoch=10)
    assert [p["trial"] for p in points] == ["a", "b", "c", "d", "e"]
    assert [p["steps"] for p in points] == [10, 50, 90, 110, 150]
    assert [p["pick"] for p in points] == [None, "b", "c", "c", "c"]
    assert math.isnan(points[0]["pick_test"])
    assert [p["pick_test"] for p in points[1:]] == [3.0, 1.5, 1.5, 1.5]
    assert bench.first_within(points, reference=3.2) == 50
    assert bench.first_within(points, reference=5.0) is None


def test_curve_of_a_min_metric_and_a_pick_without_test_sdr():
    rows = [row("a", 1, 2, "finished", 0.5), row("b", 2, 2, "finished", 0.2, 2.0)]
    points = bench.efficiency_curve(rows, 3, metric="valid_sdr_vocals", mode="min")
    assert [p["pick"] for p in points] == ["a", "b"]
    assert math.isnan(points[0]["pick_test"]) and points[1]["pick_test"] == 2.0
