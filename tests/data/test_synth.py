"""Synthetic corpus: determinism, layout on disk, musical variety and separation difficulty."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sepray.data.synth as synth
from sepray.audio import read_audio
from sepray.data.synth import SynthSong, song_seed, synthesize_song, write_corpus

SR = 16000
LSB = 1 / 32768  # one 16-bit quantization step


@pytest.fixture(scope="module")
def songs() -> list[SynthSong]:
    """Eight 8-second songs of corpus seed 0 (long enough for two or more sections each)."""
    return [synthesize_song(song_seed(0, i), 8.0, SR) for i in range(8)]


def _sung(song: SynthSong) -> list[tuple[int, int]]:
    """(start, end) samples of the sections the meta marks as sung."""
    spans = [(s["start"], s["end"]) for s in song.meta["vocal"]["sections"] if s["active"]]
    return [(int(a * SR), int(b * SR)) for a, b in spans]


def _power_spectrogram(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, bins)


def test_same_seed_same_song_and_different_seed_different_song():
    a, b, c = synthesize_song(7, 3.0), synthesize_song(7, 3.0), synthesize_song(8, 3.0)
    np.testing.assert_array_equal(a.vocals, b.vocals)
    np.testing.assert_array_equal(a.accompaniment, b.accompaniment)
    assert a.meta == b.meta
    assert not np.array_equal(a.accompaniment, c.accompaniment)
    assert a.meta != c.meta


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_shapes_dtype_and_range(sample_rate):
    song = synthesize_song(3, 2.5, sample_rate)
    length = round(2.5 * sample_rate)
    for audio in (song.vocals, song.accompaniment, song.mix):
        assert audio.shape == (2, length) and audio.dtype == np.float32
        assert np.isfinite(audio).all()
    assert 0.1 < np.abs(song.mix).max() < 0.95
    assert max(np.abs(song.vocals).max(), np.abs(song.accompaniment).max()) < 0.95
    assert song.accompaniment.std() > 1e-3
    assert not np.array_equal(song.accompaniment[0], song.accompaniment[1])  # panned: real stereo
    json.dumps(song.meta)


def test_rejects_bad_arguments():
    for kwargs in ({"seed": -1}, {"seconds": 0.0}, {"sample_rate": 4000}):
        with pytest.raises(ValueError):
            synthesize_song(**{"seed": 0, "seconds": 1.0, **kwargs})


def test_meta_describes_the_song(songs):
    meta = songs[0].meta
    for key in (
        "seed",
        "style",
        "key",
        "mode",
        "tempo_bpm",
        "chord_degrees",
        "instruments",
        "vocal",
        "reverb",
    ):
        assert key in meta
    assert {"bass"} <= set(meta["instruments"])
    assert all({"level_db", "pan"} <= set(p) for p in meta["instruments"].values())
    assert {"mode", "sections", "level_db", "vibrato_rate_hz", "glide_ms"} <= set(meta["vocal"])
    assert meta["vocal"]["sections"][-1]["end"] <= meta["seconds"]


def test_songs_vary(songs):
    metas = [song.meta for song in songs]
    assert len({m["key"] for m in metas}) >= 3
    assert len({round(m["tempo_bpm"]) for m in metas}) >= 5
    assert len({m["style"] for m in metas}) >= 3
    assert len({m["mode"] for m in metas}) >= 2
    assert len({tuple(sorted(m["instruments"])) for m in metas}) >= 3
    assert all(70 <= m["tempo_bpm"] <= 160 for m in metas)


def test_some_sections_have_no_vocal_and_are_silent_after_the_reverb_tail(songs):
    checked = 0
    for song in songs:
        sung = _sung(song)
        if not sung:
            continue
        loud = np.sqrt(np.mean(np.concatenate([song.vocals[:, a:b] for a, b in sung], axis=1) ** 2))
        for section in song.meta["vocal"]["sections"]:
            start = section["start"] + song.meta["reverb"]["rt60_s"] + 0.2
            if section["active"] or section["end"] - start < 0.3:
                continue
            quiet = song.vocals[:, int(start * SR) : int(section["end"] * SR)]
            assert np.sqrt(np.mean(quiet**2)) < 1e-3 * loud
            checked += 1
    assert checked >= 1


def test_a_minority_of_songs_have_no_vocal_at_all():
    def sung_sections(seed: int) -> int:  # the song plan alone, without rendering audio
        rng = np.random.default_rng(seed)
        plan = synth._plan_song(rng, synth.STYLES[synth._pick_style(rng)], 10.0)
        return sum(on for *_, on in plan.sections)

    silent = [seed for seed in range(200) if sung_sections(seed) == 0]
    assert 10 <= len(silent) <= 60  # about 15%
    song = synthesize_song(silent[0], 10.0)
    assert song.meta["vocal"]["mode"] == "none"
    assert not song.vocals.any() and song.accompaniment.std() > 1e-3


def test_vocal_is_pitched_where_sung(songs):
    window, freqs = np.hanning(2048), np.fft.rfftfreq(2048, 1 / SR)
    fundamental, band = (freqs >= 80) & (freqs <= 1000), (freqs >= 80) & (freqs <= 4000)
    for song in songs:
        voice = song.vocals.mean(0)
        energy = _power_spectrogram(voice).sum(1)
        frames = np.flatnonzero(energy > 0.01 * energy.max())[::4] * 256
        peaks = [np.abs(np.fft.rfft(voice[f : f + 2048] * window)) for f in frames if f + 2048 <= len(voice)]
        contrast = [20 * np.log10(p[fundamental].max() / np.median(p[band])) for p in peaks]
        assert not peaks or np.mean(np.array(contrast) > 15) > 0.8  # harmonic peaks, not noise


def test_vocal_overlaps_accompaniment_in_time_and_frequency(songs):
    freqs = np.fft.rfftfreq(1024, 1 / SR)
    mid = (freqs >= 200) & (freqs < 4000)
    shares = []
    for song in filter(lambda s: _sung(s), songs):
        vocal = _power_spectrogram(song.vocals.mean(0))
        accompaniment = _power_spectrogram(song.accompaniment.mean(0))
        active = vocal.sum(1) > 0.01 * vocal.sum(1).max()
        vocal, accompaniment = vocal[active], accompaniment[active]
        assert (
            vocal[:, mid].sum() > 0.5 * vocal.sum()
            and accompaniment[:, mid].sum() > 0.1 * accompaniment.sum()
        )
        assert abs(10 * np.log10(vocal[:, mid].sum() / accompaniment[:, mid].sum())) < 15
        # share of the vocal energy in bins where the accompaniment is within 20 dB of it
        shares.append((vocal * (accompaniment > 0.01 * vocal)).sum() / vocal.sum())
    assert len(shares) >= 4 and min(shares) > 0.1 and np.mean(shares) > 0.2


def test_write_corpus_layout_and_mix_is_sum_of_sources(tmp_path):
    folders = write_corpus(tmp_path, songs=2, seconds=2.0, seed=5)
    assert [f.name for f in folders] == sorted(p.name for p in tmp_path.iterdir())
    for index, folder in enumerate(folders):
        assert folder.name.startswith(f"synth-{index:03d}-")
        assert sorted(p.name for p in folder.iterdir()) == [
            "meta.json",
            "mix.wav",
            "source-01.wav",
            "source-02.wav",
        ]
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["name"] == folder.name and folder.name.endswith(meta["style"])
        assert meta["index"] == index and meta["corpus_seed"] == 5 and meta["seed"] == song_seed(5, index)
        mix, sr = read_audio(folder / "mix.wav")
        accompaniment, _ = read_audio(folder / "source-01.wav")
        vocals, _ = read_audio(folder / "source-02.wav")
        assert sr == SR and mix.shape == accompaniment.shape == vocals.shape == (2, 2 * SR)
        # libsndfile writes round(x * 32767) and reads back / 32768: up to ~1 step of error per file
        assert (mix - accompaniment - vocals).abs().max() <= 1.5 * LSB + 1e-7
        song = synthesize_song(meta["seed"], 2.0)
        assert np.abs(accompaniment.numpy() - song.accompaniment).max() <= LSB + 1e-7
        assert np.abs(vocals.numpy() - song.vocals).max() <= LSB + 1e-7


def test_write_corpus_is_byte_identical_across_runs(tmp_path):
    first = write_corpus(tmp_path / "a", songs=2, seconds=1.5, seed=9)
    second = write_corpus(tmp_path / "b", songs=2, seconds=1.5, seed=9)
    for x, y in zip(first, second, strict=True):
        assert x.name == y.name
        for name in ("mix.wav", "source-01.wav", "source-02.wav", "meta.json"):
            assert (x / name).read_bytes() == (y / name).read_bytes()


def test_rerun_skips_complete_songs_and_repairs_incomplete_ones(tmp_path):
    folders = write_corpus(tmp_path, songs=2, seconds=1.5, seed=1)
    stamps = {p: p.stat().st_mtime_ns for f in folders for p in f.iterdir()}
    original = (folders[1] / "source-02.wav").read_bytes()
    (folders[1] / "source-02.wav").unlink()
    assert write_corpus(tmp_path, songs=2, seconds=1.5, seed=1) == folders
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items() if p.parent == folders[0])
    assert (folders[1] / "source-02.wav").read_bytes() == original
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_rerun_with_other_parameters_regenerates(tmp_path):
    (folder,) = write_corpus(tmp_path, songs=1, seconds=1.0, seed=2)
    (again,) = write_corpus(tmp_path, songs=1, seconds=1.5, seed=2)
    assert again == folder and json.loads((folder / "meta.json").read_text())["seconds"] == 1.5


def test_interrupted_write_leaves_no_partial_song(tmp_path, monkeypatch):
    calls = []

    def failing_write_audio(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write_audio(*args, **kwargs)

    real_write_audio = synth.write_audio
    monkeypatch.setattr(synth, "write_audio", failing_write_audio)
    with pytest.raises(KeyboardInterrupt):
        write_corpus(tmp_path, songs=2, seconds=1.0, seed=3)
    assert list(tmp_path.iterdir()) == []  # neither a song folder nor a temporary one
    monkeypatch.setattr(synth, "write_audio", real_write_audio)
    folders = write_corpus(tmp_path, songs=2, seconds=1.0, seed=3)
    assert all((f / "mix.wav").is_file() for f in folders)
