"""Scoring full songs at a rate other than the model's (`data.eval_sample_rate`, `sepray evaluate --sample-rate`):
MIR-1K papers separate at 8 kHz and score the 16 kHz clips. The songs are separated as `sepray separate` does
(resampled to the model's rate and back, the band above it to the accompaniment) and scored at their own rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sepray import SOURCES, names
from sepray.bss_eval import score_clip
from sepray.config import ConfigError, load_config
from sepray.data import load_splits
from sepray.ensemble.build import ensemble_run
from sepray.evaluate import evaluate_run, evaluate_songs
from sepray.separate import load_run_model, separate_song
from sepray.sweep import ensemble_stage
from sepray.sweep.spec import load_spec
from sepray.train_run import train_run
from tests.data.fixtures import mir1k_folder

REPO = Path(__file__).resolve().parents[1]
CLIPS = {"abjones": {1: 2, 2: 1}, "amy": {1: 2}, "singer3": {1: 2}, "singer4": {1: 1}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Wave-U-Net trained at 8 kHz on 16 kHz MIR-1K-style clips, scored at 16 kHz by its config."""
    tmp = tmp_path_factory.mktemp("rate")
    root = mir1k_folder(tmp / "mir", CLIPS, seconds=1.5, sr=16000)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    overrides = [
        f"data.path={root}",
        "data.split=mir1k-standard",
        f"data.cache_dir={tmp / 'cache'}",
        "data.eval_sample_rate=16000",
        "train.epochs=1",
    ]
    cfg = load_config("unittest", overrides)
    result = train_run(
        cfg, experiment="rate", checkpoint_root=str(tmp / "runs"), uri=uri, log=lambda *a: None
    )
    return cfg, result.run_id, uri


def test_evaluate_scores_the_songs_at_eval_sample_rate_as_separate_would(trained):
    cfg, run_id, uri = trained
    result = evaluate_run(run_id, uri=uri, device="cpu", metric=names.BSS_EVAL_V3, log=False)
    assert result["sample_rate"] == 16000
    model, info = load_run_model(run_id, "cpu", uri)
    assert info.sample_rate == 8000
    songs = load_splits(load_config("unittest", [*_data(cfg), "data.sample_rate=16000"]).data, ("test",))[
        "test"
    ]
    assert (
        sorted(s.name for s in songs)
        == sorted(result["songs"])
        == ["singer3_1_01", "singer3_1_02", "singer4_1_01"]
    )
    for song in songs:
        est = separate_song(model, song.mix, 16000, 8000, cfg.train.eval_chunk_seconds)
        refs = torch.stack([song.sources[s] for s in SOURCES])
        expected = score_clip(SOURCES, refs, torch.stack([est[s] for s in SOURCES]), song.mix)
        assert result["bss_eval_v3"]["seconds"][song.name] == pytest.approx(1.5)
        for s in SOURCES:
            assert result["bss_eval_v3"]["songs"][song.name][s]["nsdr"] == pytest.approx(expected[s]["nsdr"])


def test_sample_rate_argument_overrides_the_config(trained):
    _, run_id, uri = trained
    at_model_rate = evaluate_run(run_id, uri=uri, device="cpu", log=False, sample_rate=8000)
    at_eval_rate = evaluate_run(run_id, uri=uri, device="cpu", log=False)
    assert at_model_rate["sample_rate"] == 8000 and at_eval_rate["sample_rate"] == 16000
    assert at_model_rate["songs"].keys() == at_eval_rate["songs"].keys()
    assert at_model_rate["songs"] != at_eval_rate["songs"]


def test_evaluate_songs_at_the_model_rate_is_unchanged(trained):
    cfg, run_id, uri = trained
    model, _ = load_run_model(run_id, "cpu", uri)
    songs = load_splits(cfg.data, ("test",))["test"]
    plain = evaluate_songs(model, songs, 8000, chunk_seconds=1.0)
    same = evaluate_songs(model, songs, 8000, chunk_seconds=1.0, model_rate=8000)
    assert plain["songs"] == same["songs"]


def test_an_ensemble_is_scored_at_its_members_eval_sample_rate(trained):
    """A sweep's ensemble stage scores at the members' ``data.eval_sample_rate`` (16 kHz), as their own test
    evaluations did, not at the ensemble's 8 kHz: the same numbers as `sepray evaluate` of the ensemble run."""
    cfg, run_id, uri = trained
    second = train_run(
        load_config("unittest", [*_data(cfg), "data.eval_sample_rate=16000", "train.epochs=1", "train.seed=1"]),
        experiment="rate", checkpoint_root=str(Path(cfg.data.cache_dir).parent / "runs"), uri=uri,
        log=lambda *a: None,
    ).run_id  # fmt: skip
    spec = load_spec(REPO / "sweeps" / "mir1k.yaml", [f"data.path={cfg.data.path}"])
    members = [{"run_id": run_id}, {"run_id": second}]
    with ensemble_run([run_id, second], "equal", uri=uri, device="cpu", log=lambda *a: None) as built:
        assert built.ensemble.sample_rate == 8000
        staged = ensemble_stage._evaluate(built, members, spec, None)
        ensemble_id = built.run.run_id
    by_cli = evaluate_run(ensemble_id, uri=uri, device="cpu", metric=names.BSS_EVAL_V3, log=False)
    assert by_cli["sample_rate"] == 16000
    assert _nsdr(staged) == pytest.approx(_nsdr(by_cli)) and len(_nsdr(staged)) == 3 * len(SOURCES)
    at_8k = evaluate_run(
        ensemble_id, uri=uri, device="cpu", metric=names.BSS_EVAL_V3, log=False, sample_rate=8000
    )
    assert at_8k["sample_rate"] == 8000 and _nsdr(at_8k) != pytest.approx(_nsdr(staged))


@pytest.mark.parametrize(
    "override, needle",
    [
        ("data.eval_sample_rate=0", "eval_sample_rate must be > 0"),
        (
            "data.layout=mir1k",
            "path is not set, but layout mir1k needs a dataset folder (--set data.path=FOLDER)",
        ),
        ("data.split=mir1k-standard", "path is not set, but split mir1k-standard needs a dataset folder"),
    ],
)
def test_data_errors_are_one_line(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config("unittest", [override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def _data(cfg) -> list[str]:
    return [f"data.path={cfg.data.path}", "data.split=mir1k-standard", f"data.cache_dir={cfg.data.cache_dir}"]


def _nsdr(result) -> list[float]:
    """Every song's NSDR of every source, in song-name order."""
    songs = result["bss_eval_v3"]["songs"]
    return [songs[name][s]["nsdr"] for name in sorted(songs) for s in SOURCES]
