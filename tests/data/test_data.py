"""Data pipeline: layouts, loading + cache, splits, synthetic corpus, augmentation, crop sampling."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sepray import dsp
from sepray.audio import audio_info, read_audio, write_audio
from sepray.config import AugmentConfig, DataConfig
from sepray.data import (
    NO_AUGMENT,
    CropSampler,
    DatasetError,
    Song,
    assign_splits,
    augment_crop,
    clear_memo,
    ensure_synthetic_corpus,
    fixed_crops,
    load_song_folder,
    load_splits,
)
from sepray.data import augment as augment_module
from sepray.data.cache import audio_cache_key, cached_audio_path

MUSDB_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "musdb18hq-sample"
SR = 8000


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_memo()
    yield
    clear_memo()


def write_ccmixter_song(
    folder: Path, seconds: float = 0.25, sr: int = SR, seed: int = 0, meta: str | None = None
):
    """A stereo CCMixter song folder of real WAV files; returns (mix, accompaniment, vocals) as written."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sr)
    acc = 0.3 * torch.rand(2, n, generator=g) - 0.15
    voc = 0.3 * torch.rand(2, n, generator=g) - 0.15
    mix = acc + voc
    write_audio(folder / "mix.wav", mix, sr, subtype="FLOAT")
    write_audio(folder / "source-01.wav", acc, sr, subtype="FLOAT")
    write_audio(folder / "source-02.wav", voc, sr, subtype="FLOAT")
    if meta is not None:
        (folder / "meta.json").write_text(meta)
    return mix, acc, voc


def ccmixter_tree(root: Path, count: int = 6) -> Path:
    for i in range(count):
        write_ccmixter_song(root / f"song-{i:02d}", seed=i)
    return root


def config(root: Path | None, cache: Path, **kw) -> DataConfig:
    return DataConfig(path=None if root is None else str(root), cache_dir=str(cache), **kw)


# ---------------------------------------------------------------- MUSDB18-HQ


def test_musdb_sample_loads_as_16k_mono_with_summed_accompaniment(tmp_path):
    if not MUSDB_SAMPLE.is_dir():
        pytest.skip(f"shared MUSDB18-HQ excerpt not found at {MUSDB_SAMPLE}")
    splits = load_splits(
        config(MUSDB_SAMPLE, tmp_path / "cache", layout="auto", sample_rate=16000, channels=1)
    )
    assert [s.name for s in splits["train"]] == ["Music Delta - 80s Rock"]  # one track: too few for valid
    assert splits["valid"] == [] and splits["test"] == []  # the excerpt has no test/ folder
    song = splits["train"][0]
    track = MUSDB_SAMPLE / "train" / song.name
    sr, _, frames = audio_info(track / "mixture.wav")
    expected_length = math.ceil(frames * 16000 / sr)
    assert song.mix.shape == (1, expected_length)
    assert song.meta["layout"] == "musdb" and set(song.sources) == {"vocals", "accompaniment"}

    def prepared(name):
        x, rate = read_audio(track / name)
        return dsp.resample(x.mean(0, keepdim=True), rate, 16000)

    stems = prepared("drums.wav") + prepared("bass.wav") + prepared("other.wav")
    torch.testing.assert_close(song.sources["accompaniment"], stems, atol=1e-5, rtol=0)
    torch.testing.assert_close(song.sources["vocals"], prepared("vocals.wav"), atol=1e-5, rtol=0)
    torch.testing.assert_close(song.mix, prepared("mixture.wav"), atol=1e-5, rtol=0)

    direct = load_song_folder(track, config(None, tmp_path / "cache", sample_rate=16000))
    assert direct is song  # the in-process memo


def test_musdb_test_folder_is_test_split(tmp_path):
    root = tmp_path / "musdb"
    for subset, names in (("train", ["a", "b", "c", "d"]), ("test", ["t1", "t2"])):
        for name in names:
            for stem in ("mixture", "vocals", "drums", "bass", "other"):
                write_audio(root / subset / name / f"{stem}.wav", torch.zeros(2, 400), 16000)
    splits = load_splits(config(root, tmp_path / "cache", valid_fraction=0.25))
    assert [s.name for s in splits["test"]] == ["t1", "t2"]
    assert len(splits["valid"]) == 1 and len(splits["train"]) == 3
    assert {s.name for s in splits["train"] + splits["valid"]} == {"a", "b", "c", "d"}


# ---------------------------------------------------------------- CCMixter loading, cache, splits


def test_ccmixter_song_loads_resampled_remixed_with_meta(tmp_path):
    folder = tmp_path / "corpus" / "one"
    mix, acc, voc = write_ccmixter_song(folder, meta='{"style": "rock"}')
    song = load_song_folder(folder, config(None, tmp_path / "cache", sample_rate=SR, channels=2))
    torch.testing.assert_close(song.mix, mix)
    torch.testing.assert_close(song.sources["accompaniment"], acc)
    torch.testing.assert_close(song.sources["vocals"], voc)
    assert song.meta["style"] == "rock" and song.meta["folder"] == str(folder.resolve())

    mono = load_song_folder(folder, config(None, tmp_path / "cache", sample_rate=2 * SR, channels=1))
    assert mono.mix.shape == (1, 2 * mix.shape[1])
    torch.testing.assert_close(
        mono.mix, dsp.resample(mix.mean(0, keepdim=True), SR, 2 * SR), atol=1e-5, rtol=0
    )


def test_ccmixter_splits_deterministic_disjoint(tmp_path):
    root = ccmixter_tree(tmp_path / "corpus", count=6)
    cfg = config(root, tmp_path / "cache", layout="auto", sample_rate=SR)
    first = {k: [s.name for s in v] for k, v in load_splits(cfg).items()}
    clear_memo()
    second = {k: [s.name for s in v] for k, v in load_splits(cfg).items()}
    assert first == second
    # 6 songs: test round(0.2 * 6) = 1, valid round(0.15 * 5) = 1, train 4
    assert [len(first[k]) for k in ("train", "valid", "test")] == [4, 1, 1]
    names = first["train"] + first["valid"] + first["test"]
    assert sorted(names) == [f"song-{i:02d}" for i in range(6)]
    assert first == assign_splits([f"song-{i:02d}" for i in range(6)], 0.2, 0.15)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (4, (2, 1, 1)), (16, (11, 2, 3)), (50, (34, 6, 10))],
)
def test_split_sizes(n, expected):
    parts = assign_splits([f"s{i}" for i in range(n)], 0.2, 0.15)
    assert tuple(len(parts[k]) for k in ("train", "valid", "test")) == expected
    assert assign_splits([f"s{i}" for i in reversed(range(n))], 0.2, 0.15) == parts


def test_no_training_songs_is_a_clear_error(tmp_path):
    root = ccmixter_tree(tmp_path / "corpus", count=3)
    with pytest.raises(DatasetError, match="no training songs") as info:
        load_splits(config(root, tmp_path / "cache", test_fraction=0.9))
    assert str(root.resolve()) in str(info.value) and "\n" not in str(info.value)


def test_cache_is_hit_on_second_load_and_keyed_by_file(tmp_path):
    folder = tmp_path / "corpus" / "one"
    _, acc, _ = write_ccmixter_song(folder)
    cache = tmp_path / "cache"
    cfg = config(None, cache, sample_rate=SR, channels=2)
    load_song_folder(folder, cfg)
    src = folder / "source-01.wav"
    key = audio_cache_key(src, SR, 2)
    entry = cached_audio_path(cache, key)
    assert entry.is_file() and len(list((cache / "audio").rglob("*.npy"))) == 3
    assert not list((cache / "audio").rglob(".*"))  # no temporary files left behind
    torch.testing.assert_close(torch.from_numpy(np.load(entry)), acc)

    # A second load in a new process would read the cache, not the WAV: prove it by poisoning the entry.
    np.save(entry, np.full((2, acc.shape[1]), 0.125, dtype=np.float32))
    clear_memo()
    assert torch.all(load_song_folder(folder, cfg).sources["accompaniment"] == 0.125)
    # Same process, no clear: the memo returns the very same song.
    assert load_song_folder(folder, cfg) is load_song_folder(folder, cfg)

    # Changing the source file changes the key: the new audio is decoded.
    new_acc = acc * 0.5
    write_audio(src, new_acc, SR, subtype="FLOAT")
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert audio_cache_key(src, SR, 2) != key
    torch.testing.assert_close(load_song_folder(folder, cfg).sources["accompaniment"], new_acc)
    # A different target format is a different entry too.
    assert audio_cache_key(src, SR, 1) != audio_cache_key(src, SR, 2)


def test_missing_file_error_names_the_file(tmp_path):
    root = ccmixter_tree(tmp_path / "corpus", count=3)
    (root / "song-01" / "source-02.wav").unlink()
    with pytest.raises(DatasetError) as info:
        load_splits(config(root, tmp_path / "cache"))
    message = str(info.value)
    assert str(root.resolve() / "song-01" / "source-02.wav") in message and "\n" not in message


def test_bad_layout_error_names_the_path(tmp_path):
    empty = tmp_path / "not-a-dataset"
    (empty / "stuff").mkdir(parents=True)
    (empty / "stuff" / "notes.txt").write_text("hi")
    for layout in ("auto", "ccmixter", "musdb"):
        with pytest.raises(ValueError) as info:
            load_splits(config(empty, tmp_path / "cache", layout=layout))
        assert str(empty.resolve()) in str(info.value) and "expected" in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no such dataset folder"):
        load_splits(config(tmp_path / "missing", tmp_path / "cache"))
    root = ccmixter_tree(tmp_path / "corpus", count=2)
    with pytest.raises(ValueError, match="not a MUSDB18-HQ root"):
        load_splits(config(root, tmp_path / "cache", layout="musdb"))
    with pytest.raises(ValueError, match="not a song folder"):
        load_song_folder(empty / "stuff", config(None, tmp_path / "cache"))


def test_sample_rate_mismatch_is_an_error_naming_the_file(tmp_path):
    folder = tmp_path / "corpus" / "one"
    write_ccmixter_song(folder)
    write_audio(folder / "source-02.wav", torch.zeros(2, 4000), 2 * SR)
    with pytest.raises(DatasetError, match="sample rate") as info:
        load_song_folder(folder, config(None, tmp_path / "cache"))
    assert str(folder.resolve() / "source-02.wav") in str(info.value)


def test_length_mismatch_trims_to_shortest_with_warning(tmp_path, caplog):
    folder = tmp_path / "corpus" / "one"
    mix, _, voc = write_ccmixter_song(folder)
    write_audio(folder / "source-02.wav", voc[:, :1500], SR, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="sepray.data"):
        song = load_song_folder(folder, config(None, tmp_path / "cache", sample_rate=SR, channels=2))
    assert song.length == 1500 and all(s.shape == (2, 1500) for s in song.sources.values())
    torch.testing.assert_close(song.mix, mix[:, :1500])
    assert any("trimming to the shortest" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- synthetic corpus


def test_synthetic_corpus_generated_once_and_loaded(tmp_path, monkeypatch):
    synth = pytest.importorskip("sepray.data.synth", reason="sepray.data.synth not written yet")
    calls = []
    real = synth.write_corpus

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "write_corpus", counting)
    cfg = config(None, tmp_path / "cache", synth_songs=3, synth_seconds=0.5, synth_seed=1)
    with ThreadPool(2) as pool:  # two callers at once: one generates, the other waits and reuses it
        roots = pool.map(lambda _: ensure_synthetic_corpus(cfg), range(2))
    assert roots[0] == roots[1] and len(calls) == 1
    root = roots[0]
    assert root.parent == (tmp_path / "cache").resolve() and root.name.startswith("synth-")
    assert (root / ".complete").is_file() and not list(root.parent.glob(".synth-*/"))
    assert ensure_synthetic_corpus(cfg) == root and len(calls) == 1
    assert ensure_synthetic_corpus(dataclasses.replace(cfg, synth_seed=2)) != root

    splits = load_splits(cfg)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [1, 1, 1]
    song = splits["train"][0]
    assert song.mix.shape == (1, 8000) and song.meta["layout"] == "ccmixter"
    assert len(song.meta) > 3  # the generator's meta.json is there
    assert [s.name for s in splits["test"]] == [s.name for s in load_splits(cfg)["test"]]


class ThreadPool:
    """Tiny thread pool (threads exercise the same flock path as processes: one open file each)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items):
        items = list(items)
        results, errors = [None] * len(items), []

        def run(i):
            try:
                results[i] = fn(items[i])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


# ---------------------------------------------------------------- sampler


def index_song(name: str, length: int, base: float, channels: int = 1) -> Song:
    """Samples encode their position: mix = base + position (1-based), vocals +0.25, accompaniment +0.5."""
    pos = base + torch.arange(1, length + 1, dtype=torch.float32)
    mix = pos.expand(channels, -1).clone()
    return Song(name, mix, {"vocals": mix + 0.25, "accompaniment": mix + 0.5}, {})


def test_sampler_shapes_and_centring():
    songs = [index_song("a", 300, 0.0, channels=2), index_song("b", 900, 10000.0, channels=2)]
    in_len, out_len = 101, 40
    offset = (in_len - out_len) // 2
    sampler = CropSampler(songs, in_len, out_len, ("accompaniment", "vocals"), NO_AUGMENT, SR, seed=3)
    mix, target = sampler.batch(64)
    assert mix.shape == (64, 2, in_len) and target.shape == (64, 2, 2, out_len)
    assert mix.dtype == target.dtype == torch.float32
    padded = 0
    for m, t in zip(mix, target, strict=True):
        centre = m[:, offset : offset + out_len]
        torch.testing.assert_close(t[0], centre + 0.5, rtol=0, atol=0)  # accompaniment first
        torch.testing.assert_close(t[1], centre + 0.25, rtol=0, atol=0)
        assert torch.all(centre > 0)  # the target window lies inside the song
        inside = m[0][m[0] > 0]
        assert torch.all(torch.diff(inside) == 1)  # one contiguous stretch of the song, zeros outside
        padded += int((m[0] == 0).any())
    assert padded > 0  # crops at the song edges are drawn, zero-padded


def test_sampler_picks_songs_in_proportion_to_length():
    songs = [index_song("short", 1000, 0.0), index_song("long", 3000, 100000.0)]
    sampler = CropSampler(songs, 32, 32, ("vocals",), NO_AUGMENT, SR, seed=0)
    mix, _ = sampler.batch(2000)
    long_share = (mix[:, 0, 16] > 50000).float().mean().item()
    assert 0.70 < long_share < 0.80


def test_sampler_without_augmentation_uses_the_song_mixture():
    song = index_song("a", 500, 0.0)
    song.mix = song.mix * 3.0  # not the sum of the sources: the input must still be this mixture
    mix, _ = CropSampler([song], 64, 32, ("vocals",), NO_AUGMENT, SR, seed=0).batch(8)
    centre = mix[:, 0, 16:48]
    assert torch.all(centre % 3 == 0)


def test_gain_augmentation_statistics():
    n = 4000
    song = Song(
        "const",
        torch.full((1, n), 0.9),
        {"vocals": torch.full((1, n), 0.5), "accompaniment": torch.full((1, n), 0.25)},
        {},
    )
    aug = AugmentConfig(gain_min=0.7, gain_max=1.0)
    sampler = CropSampler([song], 200, 100, ("vocals", "accompaniment"), aug, SR, seed=1)
    mix, target = sampler.batch(512)
    f0 = target[:, 0] / 0.5  # (B, C, T)
    f1 = target[:, 1] / 0.25
    for f in (f0, f1):
        per_crop = f[:, 0, 0]
        assert torch.allclose(f, per_crop.view(-1, 1, 1).expand_as(f))  # one gain per crop and source
        assert per_crop.min() >= 0.7 - 1e-6 and per_crop.max() <= 1.0 + 1e-6
        assert abs(per_crop.mean().item() - 0.85) < 0.02
        assert abs(per_crop.std().item() - 0.3 / math.sqrt(12)) < 0.015
    assert abs(np.corrcoef(f0[:, 0, 0].numpy(), f1[:, 0, 0].numpy())[0, 1]) < 0.15  # independent gains
    # the input is re-summed from the scaled sources, never the song's own mix (0.9)
    torch.testing.assert_close(mix[:, :, 50:150], target.sum(dim=1))


@pytest.fixture
def fake_pitch_shift(monkeypatch):
    """Stand in for dsp.pitch_shift (real one: seconds per call) and record its calls."""
    calls = []

    def fake(x, sample_rate, semitones):
        calls.append((tuple(x.shape), sample_rate, semitones))
        return -x + 0.01

    monkeypatch.setattr(augment_module.dsp, "pitch_shift", fake)
    return calls


def test_pitch_shift_input_changes_only_the_segment(fake_pitch_shift):
    sr = 1000
    g = torch.Generator().manual_seed(0)
    aug = AugmentConfig(gain_min=1.0, gain_max=1.0, pitch_shift_prob=1.0, pitch_semitones=0.5,
                        pitch_min_seconds=0.25, pitch_max_seconds=0.5, pitch_target="input")  # fmt: skip
    mix = torch.rand(2, 2000, generator=g) + 0.1
    sources = torch.rand(2, 2, 2000, generator=g)
    for _ in range(20):
        out_mix, out_src, gains, seg = augment_crop(mix, sources, aug, sr, g)
        assert seg is not None and 250 <= seg.length <= 500 and -0.5 <= seg.semitones <= 0.5
        assert 0 <= seg.start and seg.start + seg.length <= 2000
        changed = (out_mix != mix).any(dim=0).nonzero().flatten()
        assert changed.min() == seg.start and changed.max() == seg.start + seg.length - 1
        assert len(changed) == seg.length
        assert torch.equal(out_src, sources) and torch.all(gains == 1)
        assert fake_pitch_shift[-1] == ((2, seg.length), sr, seg.semitones)
    assert len({round(c[2], 6) for c in fake_pitch_shift}) == 20  # a fresh shift every crop


def test_pitch_shift_both_shifts_sources_and_resums(fake_pitch_shift):
    g = torch.Generator().manual_seed(1)
    aug = AugmentConfig(pitch_shift_prob=1.0, pitch_target="both")
    sources = torch.rand(2, 1, 8000, generator=g)
    out_mix, out_src, gains, seg = augment_crop(None, sources, aug, SR, g)
    torch.testing.assert_close(out_mix, out_src.sum(dim=0))
    scaled = sources * gains.view(2, 1, 1)
    changed = (out_src != scaled).any(dim=0).any(dim=0).nonzero().flatten()
    assert changed.min() == seg.start and len(changed) == seg.length


def test_pitch_shift_probability(fake_pitch_shift):
    g = torch.Generator().manual_seed(2)
    aug = AugmentConfig(pitch_shift_prob=0.3)
    hits = sum(augment_crop(None, torch.rand(2, 1, 4000), aug, SR, g)[3] is not None for _ in range(400))
    assert 0.22 < hits / 400 < 0.38


def test_sampler_state_round_trip_reproduces_batches(tmp_path, fake_pitch_shift):
    songs = [index_song("a", 700, 0.0), index_song("b", 1300, 5000.0)]
    aug = AugmentConfig(pitch_shift_prob=0.5, pitch_min_seconds=0.01, pitch_max_seconds=0.02)
    sampler = CropSampler(songs, 120, 60, ("vocals", "accompaniment"), aug, SR, seed=7)
    sampler.batch(4)
    torch.save(sampler.state_dict(), tmp_path / "sampler.pt")
    expected = [sampler.batch(4) for _ in range(3)]
    resumed = CropSampler(songs, 120, 60, ("vocals", "accompaniment"), aug, SR, seed=999)
    state = torch.load(tmp_path / "sampler.pt", weights_only=True)
    resumed.load_state_dict({**state, "generator": state["generator"].to(torch.float32)})  # any device/dtype
    assert resumed.batches_drawn == 1
    for (m0, t0), (m1, t1) in zip(expected, [resumed.batch(4) for _ in range(3)], strict=True):
        assert torch.equal(m0, m1) and torch.equal(t0, t1)
    again = CropSampler(songs, 120, 60, ("vocals", "accompaniment"), aug, SR, seed=7)
    assert not torch.equal(again.batch(4)[0], expected[0][0])  # the next batch differs from the first


def test_fixed_crops_deterministic():
    songs = [index_song("a", 700, 0.0), index_song("b", 1300, 5000.0)]
    a = fixed_crops(songs, 100, 50, ("accompaniment",), count=6, seed=0)
    b = fixed_crops(songs, 100, 50, ("accompaniment",), count=6, seed=0)
    c = fixed_crops(songs, 100, 50, ("accompaniment",), count=6, seed=1)
    assert a[0].shape == (6, 1, 100) and a[1].shape == (6, 1, 1, 50)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    torch.testing.assert_close(a[1][:, 0], a[0][:, :, 25:75] + 0.5, rtol=0, atol=0)  # no augmentation


def test_sampler_rejects_bad_arguments():
    songs = [index_song("a", 100, 0.0)]
    with pytest.raises(ValueError, match="output_length"):
        CropSampler(songs, 10, 20, ("vocals",), NO_AUGMENT, SR, 0)
    with pytest.raises(ValueError, match="drums"):
        CropSampler(songs, 20, 10, ("drums",), NO_AUGMENT, SR, 0)
    with pytest.raises(ValueError, match="no songs"):
        CropSampler([], 20, 10, ("vocals",), NO_AUGMENT, SR, 0)
