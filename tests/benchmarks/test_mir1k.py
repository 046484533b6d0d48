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


def test_score_model_separates_16_khz_clips_with_an_8_khz_model_and_gives_the_figures(tmp_path):
    """The lever's and `run`'s scoring path end to end: a tiny 8 kHz spectrogram U-Net on 16 kHz test clips."""
    import torch

    from sepray.config import load_config
    from sepray.models import build_model
    from tests.data.fixtures import mir1k_folder

    root = mir1k_folder(tmp_path / "Wavfile", {"abjones": {1: 1}, "amy": {1: 1}, "Ani": {1: 2}}, 0.5, 16000)
    songs = bench.test_clips(str(root), 0, cache=str(tmp_path / "cache"))
    assert [s.name for s in songs] == ["Ani_1_01", "Ani_1_02"]
    cfg = load_config("spec-unet-small", ["model.levels=2", "model.channels=4"])
    torch.manual_seed(0)
    fig = bench.score_model(build_model(cfg.model_name, cfg.model).eval(), cfg.data.sample_rate, songs)
    assert fig["clips"] == 2 and fig["singers"].keys() == {"Ani"}
    assert fig["seconds"] == pytest.approx(1.0)
    assert all(isinstance(fig["gnsdr"][s], float) for s in ("vocals", "accompaniment"))
    assert fig["eval_seconds"] > 0 and fig["x_realtime"] > 0


def test_the_long_spec_trains_the_lever_recipe_16x_longer(tmp_path):
    """`sweeps/mir1k_long.yaml`'s one trial is the configuration whose figures the README gives from
    `benchmarks/mir1k.py lever` (the recipe, 12 x 512 steps, 2 threads): the same resolved run config."""
    from sepray.config import apply_overrides, resolve
    from sepray.sweep.spec import load_spec

    recipe = ["train.epochs=12", "train.steps_per_epoch=512", "train.lr_decay=0.85", "model.n_fft=1024"]
    recipe += ["model.hop=256", "train.loss=sdr", "train.threads=2"]
    lever = resolve(apply_overrides(bench.LEVER_BASE, [f"data.path={tmp_path}", *recipe]), "lever").flat()
    spec = load_spec(SCRIPT.parents[1] / "sweeps" / "mir1k_long.yaml", [f"data.path={tmp_path}"])
    (param,) = spec.params
    trial = resolve(spec.raw_config({param.key: param.values[0]}), "trial").flat()
    differ = {
        k: (lever.get(k), trial.get(k)) for k in set(lever) | set(trial) if lever.get(k) != trial.get(k)
    }
    # only where the test clips are scored (the lever scores at 16 kHz in one piece too, by its own code)
    assert set(differ) == {"data.eval_sample_rate", "train.eval_chunk_seconds"}, differ
    assert trial["train.epochs"] * trial["train.steps_per_epoch"] == 6144 and trial["train.threads"] == 2
