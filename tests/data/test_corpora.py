"""Several corpora in one data config (pooled splits, eval_corpus, unified rate and channels, sampling weights)
and the remix-across-songs augmentation."""

from __future__ import annotations

import json

import pytest
import torch

from sepray.config import AugmentConfig, DataConfig, load_config, run_config_from_dict
from sepray.data import CropSampler, Song, clear_memo, load_splits, prepare_corpora
from sepray.data.cache import cache_root
from sepray.schema import ConfigError, build_dataclass
from sepray.train import Trainer
from tests.data.fixtures import mir1k_folder
from tests.data.test_data import ccmixter_tree

SR = 8000
NO_GAIN = AugmentConfig(gain_min=1.0, gain_max=1.0)


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_memo()
    yield
    clear_memo()


@pytest.fixture
def two_roots(tmp_path):
    """A CCMixter corpus (8 kHz stereo songs) and a MIR-1K folder (16 kHz stereo clips of 4 singers)."""
    ccmixter = ccmixter_tree(tmp_path / "ccm", count=6)
    clips = {f"singer{i}": {1: 2} for i in range(4)} | {"abjones": {1: 2, 2: 2}, "amy": {1: 2, 2: 2}}
    mir1k = mir1k_folder(tmp_path / "mir" / "Wavfile", clips, seconds=0.1, sr=16000)
    return ccmixter, mir1k


def data_config(tmp_path, path, **kw) -> DataConfig:
    return build_dataclass(
        DataConfig, {"path": path, "cache_dir": str(tmp_path / "cache"), **kw}, "test: data"
    )


def test_several_corpora_are_split_on_their_own_and_pooled(tmp_path, two_roots):
    ccmixter, mir1k = two_roots
    roots = [
        {"path": str(ccmixter), "name": "ccm"},
        {"path": str(mir1k.parent), "layout": "ikala", "split": "mir1k-standard", "weight": 3},
    ]
    cfg = data_config(tmp_path, roots, sample_rate=SR, channels=2)
    splits = load_splits(cfg)
    by_corpus = {k: sorted({s.meta["corpus"] for s in v}) for k, v in splits.items()}
    assert by_corpus == {"train": ["ccm", "mir"], "valid": ["ccm", "mir"], "test": ["ccm", "mir"]}
    names = {k: [s.name for s in v] for k, v in splits.items()}
    alone = load_splits(data_config(tmp_path, str(ccmixter), sample_rate=SR, channels=2))
    # each corpus is split as it would be alone; pooled names say the corpus
    for split in ("train", "valid", "test"):
        assert [n for n in names[split] if n.startswith("ccm/")] == [f"ccm/{s.name}" for s in alone[split]]
    assert {n.split("/")[1].split("_")[0] for n in names["test"] if n.startswith("mir/")} == {
        f"singer{i}" for i in range(4)
    }
    # every song at data.sample_rate / data.channels whatever its corpus: 16 kHz mono-per-source clips too
    for song in splits["train"]:
        assert song.mix.shape[0] == 2 and song.sources["vocals"].shape == song.mix.shape
    clip = next(s for s in splits["test"] if s.meta["corpus"] == "mir")
    assert clip.length == round(0.1 * SR) and torch.equal(clip.mix[0], clip.mix[1])

    evaluated = load_splits(
        data_config(tmp_path, roots, sample_rate=SR, eval_corpus="mir"), ("valid", "test")
    )
    assert {s.meta["corpus"] for s in evaluated["valid"] + evaluated["test"]} == {"mir"}
    assert [s.name for s in evaluated["test"]] == [n for n in names["test"] if n.startswith("mir/")]


def test_synthetic_corpus_as_one_of_the_roots(tmp_path, two_roots):
    _, mir1k = two_roots
    cfg = data_config(
        tmp_path,
        ["synthetic", str(mir1k)],
        sample_rate=SR,
        synth_songs=3,
        synth_seconds=0.5,
        test_fraction=0.0,
    )
    assert [c.corpus_name for c in cfg.corpora()] == ["synthetic", "Wavfile"]
    splits = load_splits(cfg, ("train",))
    assert set(splits) == {"train"}  # only the splits asked for are read
    corpora = {s.meta["corpus"] for s in splits["train"]}
    assert corpora == {"synthetic", "Wavfile"}
    styles = [s.meta["style"] for s in splits["train"] if s.meta["corpus"] == "synthetic"]
    assert styles and all(styles)  # the generator's meta.json is there
    assert prepare_corpora(cfg) == 3 + 16  # every song of both corpora decoded into the cache


def test_data_path_list_round_trips_through_the_run_config(tmp_path):
    raw = {
        "data": {
            "path": [
                "synthetic",
                {"path": "/data/MIR-1K", "layout": "mir1k", "split": "mir1k-standard", "weight": 2},
            ],
            "eval_corpus": "MIR-1K",
            "augment": {"remix_prob": 0.5},
        },
        "model": {"name": "waveunet", "levels": 3, "channels": 4},
    }
    cfg = run_config_from_dict(raw)
    again = run_config_from_dict(json.loads(json.dumps(cfg.to_dict())), "run_config.json")
    assert again == cfg and again.signature() == cfg.signature()
    assert cfg.data.corpora()[1].weight == 2.0 and cfg.data.augment.remix_prob == 0.5
    assert cfg.data.describe() == "synthetic + MIR-1K"
    flat = cfg.flat()
    assert flat["data.eval_corpus"] == "MIR-1K" and flat["data.augment.remix_prob"] == 0.5


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"path": ["a/x", "b/x"]}, "data: path[1]: a second corpus named 'x'"),
        ({"path": ["/x", {"path": "/y", "weight": -1}]}, "data.path[1]: weight must be a finite number > 0"),
        ({"path": [{"path": "/y", "weights": 2}]}, "data.path[0].weights: unknown key"),
        (
            {"path": ["/x", "/y"], "split": "mir1k-standard"},
            "data: layout and split apply to a single data.path",
        ),
        ({"path": "/x", "eval_corpus": "y"}, "data: eval_corpus 'y' is not a corpus of data.path (x)"),
        ({"augment": {"remix_prob": 1.5}}, "data.augment: remix_prob must be in [0, 1]"),
    ],
)
def test_bad_corpus_lists_are_config_errors_naming_the_key(data, expected):
    with pytest.raises(ConfigError) as info:
        load_config("unittest", [f"data={json.dumps(data)}"])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_trainer_trains_on_two_corpora(tmp_path, two_roots):
    ccmixter, mir1k = two_roots
    roots = json.dumps([str(ccmixter), {"path": str(mir1k), "weight": 4, "name": "mir"}])
    cfg = load_config(
        "unittest", [f"data.path={roots}", f"data.cache_dir={tmp_path / 'cache'}", "data.eval_corpus=mir"]
    )
    trainer = Trainer(cfg, device="cpu")
    assert set(trainer.splits) == {"train", "valid"}  # the trainer does not read the test songs
    assert {s.meta["corpus"] for s in trainer.splits["valid"]} == {"mir"}
    metrics = trainer.train_epoch()
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))
    picks = trainer.sampler.weights
    mir_share = sum(
        float(w) for w, s in zip(picks, trainer.splits["train"], strict=True) if s.meta["corpus"] == "mir"
    )
    assert mir_share / float(picks.sum()) == pytest.approx(0.8)  # weight 4 against 1
    assert cache_root(cfg.data) == (tmp_path / "cache").resolve()


# ---------------------------------------------------------------- sampling weights and remix


def position_song(name: str, length: int, base: float, corpus: str = "") -> Song:
    """Samples encode song and position: vocals = base + position, accompaniment = -(base + position)."""
    pos = base + torch.arange(1, length + 1, dtype=torch.float32).unsqueeze(0)
    return Song(name, torch.zeros(1, length), {"vocals": pos, "accompaniment": -pos}, {"corpus": corpus})


def test_corpus_weights_set_each_corpus_share_of_crops():
    songs = [position_song("a1", 4000, 0.0, "a"), position_song("a2", 4000, 1e5, "a")]
    songs += [position_song("b1", 1000, 2e5, "b")]
    sampler = CropSampler(
        songs, 32, 32, ("vocals",), NO_GAIN, SR, seed=0, corpus_weights={"a": 1.0, "b": 3.0}
    )
    _, target = sampler.batch(4000)
    share_b = (target[:, 0, 0, 0] > 2e5).float().mean().item()
    assert 0.72 < share_b < 0.78  # corpus b: 3 / (1 + 3) of the crops, though its songs are shorter
    by_length = CropSampler(songs, 32, 32, ("vocals",), NO_GAIN, SR, seed=0)  # no weights: by length
    _, target = by_length.batch(4000)
    assert 0.08 < (target[:, 0, 0, 0] > 2e5).float().mean().item() < 0.14  # 1000 / 9000


def test_remix_takes_the_accompaniment_of_another_song():
    songs = [position_song(f"s{i}", 3000, i * 1e5) for i in range(4)]
    remix = AugmentConfig(gain_min=1.0, gain_max=1.0, remix_prob=1.0)
    mix, target = CropSampler(songs, 64, 32, ("vocals", "accompaniment"), remix, SR, seed=1).batch(400)
    vocal_song = (target[:, 0, 0, 0] // 1e5).long()
    accompaniment_song = ((-target[:, 1, 0, 0]) // 1e5).long()
    assert torch.all(vocal_song != accompaniment_song)  # always another song
    assert len(set(accompaniment_song.tolist())) == 4
    torch.testing.assert_close(mix[:, :, 16:48], target.sum(dim=1))  # the mixture is re-summed

    half = AugmentConfig(gain_min=1.0, gain_max=1.0, remix_prob=0.5)
    _, target = CropSampler(songs, 64, 32, ("vocals", "accompaniment"), half, SR, seed=2).batch(1000)
    remixed = ((target[:, 0, 0, 0] + target[:, 1, 0, 0]).abs() > 0.5).float().mean().item()
    assert 0.45 < remixed < 0.55


def test_remix_prob_zero_draws_the_same_batches_as_before():
    songs = [position_song(f"s{i}", 2000, i * 1e5) for i in range(3)]
    plain = CropSampler(songs, 64, 32, ("vocals",), AugmentConfig(), SR, seed=5)
    zero = CropSampler(songs, 64, 32, ("vocals",), AugmentConfig(remix_prob=0.0), SR, seed=5)
    some = CropSampler(songs, 64, 32, ("vocals",), AugmentConfig(remix_prob=0.3), SR, seed=5)
    first, second, third = plain.batch(16), zero.batch(16), some.batch(16)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], third[0])  # remixing draws from the same generator: batches change


def test_evaluation_scores_only_the_eval_corpus_test_songs(tmp_path, mlflow_uri):
    """`sepray evaluate` (and a sweep's test stage, which calls it) scores the test songs of data.eval_corpus."""
    from sepray.evaluate import evaluate_run
    from sepray.train_run import train_run

    ccmixter = ccmixter_tree(tmp_path / "ccm", count=6)
    clips = {f"singer{i}": {1: 1} for i in range(4)}
    mir1k = mir1k_folder(tmp_path / "mir", clips, seconds=1.5, sr=16000)
    roots = json.dumps([str(ccmixter), {"path": str(mir1k), "name": "mir"}])
    overrides = [f"data.path={roots}", f"data.cache_dir={tmp_path / 'cache'}", "data.eval_corpus=mir"]
    cfg = load_config("unittest", [*overrides, "train.epochs=1"])
    result = train_run(
        cfg, experiment="corpora", checkpoint_root=str(tmp_path / "runs"), uri=mlflow_uri, log=lambda *a: None
    )
    evaluated = evaluate_run(result.run_id, uri=mlflow_uri, device="cpu")
    expected = [s.name for s in load_splits(cfg.data, ("test",))["test"]]
    assert expected and all(name.startswith("mir/singer") for name in expected)
    assert sorted(evaluated["songs"]) == sorted(expected) and evaluated["data"] == "ccm + mir"
