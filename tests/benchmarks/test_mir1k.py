"""benchmarks/mir1k.py's figures: per-singer mean vocals NSDR and the worst singer from a bss_eval_v3 evaluation,
and the fixed random subset of the standard protocol's test clips (generated clips named like MIR-1K's)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.data.fixtures import full_mir1k_names

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mir1k.py"
_spec = importlib.util.spec_from_file_location("mir1k_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _clip(nsdr: float) -> dict:
    return {s: {"nsdr": nsdr, "sir": 10.0, "sar": 9.0, "sdr": nsdr} for s in ("vocals", "accompaniment")}


def test_figures_give_each_singers_mean_vocals_nsdr_and_the_worst():
    bss = {
        "songs": {
            "Ani_1_01": _clip(6.0),
            "Ani_1_02": _clip(2.0),
            "bobon_3_05": _clip(-1.0),
            "mir/leon_2_01": _clip(9.0),
        },
        "seconds": {"Ani_1_01": 4.0, "Ani_1_02": 4.0, "bobon_3_05": 2.0, "mir/leon_2_01": 10.0},
        "gnsdr": {"vocals": 5.2, "accompaniment": 5.2},
        "gsir": {"vocals": 10.0, "accompaniment": 10.0},
        "gsar": {"vocals": 9.0, "accompaniment": 9.0},
        "gsdr": {"vocals": 5.2, "accompaniment": 5.2},
    }
    fig = bench.figures(bss)
    assert fig["singers"] == {
        "Ani": 4.0,
        "bobon": -1.0,
        "leon": 9.0,
    }  # a corpus prefix is not part of the name
    assert fig["worst_singer"] == "bobon" and fig["worst_singer_nsdr_vocals"] == -1.0
    assert fig["clips"] == 4 and fig["seconds"] == 20.0 and fig["gnsdr"]["vocals"] == 5.2


def test_test_clips_are_the_825_of_the_standard_protocol_or_a_fixed_subset(tmp_path):
    root = full_mir1k_names(tmp_path / "Wavfile")
    every = bench.test_clips(str(root), 0, cache=str(tmp_path / "cache"))
    assert len(every) == 825 and not {bench.singer(s.name) for s in every} & {"abjones", "amy"}
    assert all(s.meta["sample_rate"] == 16000 for s in every[:3])
    some = bench.test_clips(str(root), 100, cache=str(tmp_path / "cache"))
    again = bench.test_clips(str(root), 100, cache=str(tmp_path / "cache"))
    assert len(some) == 100 and [s.name for s in some] == [s.name for s in again]
    assert {s.name for s in some} < {s.name for s in every}


@pytest.mark.parametrize("name, expected", [("Ani_1_01", "Ani"), ("mir1k/geniusturtle_2_07", "geniusturtle")])
def test_singer_is_the_name_before_the_first_underscore(name, expected):
    assert bench.singer(name) == expected
