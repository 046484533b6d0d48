"""Synthetic music corpus: seeded songs with a sung-like vocal over a multi-instrument accompaniment.

All numpy DSP, deterministic for a seed. `synthesize_song` returns the two sources in memory as float32
(2, T) arrays; `write_corpus` writes one CCMixter-layout folder per song (`mix.wav`, `source-01.wav`
accompaniment, `source-02.wav` vocals, `meta.json`), atomically, skipping songs already complete.

Vocal: band-limited glottal pulse train (flat harmonics up to Nyquist, spectral tilt) filtered by five
time-varying vowel formants in the STFT domain, with vibrato, portamento, scoops, aspiration noise,
consonant noise bursts, breaths between phrases and sections without singing.
Accompaniment: chord progression in a random key/mode played by 2-3 of pad (detuned saws), guitar
(Karplus-Strong), electric piano (FM), organ (additive drawbars); bass; kick/snare/hi-hat; style-dependent
patterns, levels and panning; a shared noise-reverb room.

Modules:

* ``song_plan``      styles, key/mode/tempo, chord progression and sung/unsung sections of a song
* ``accompaniment``  chord instruments, bass and drums rendered from the plan, mixed to stereo
* ``vocals``         the singer: melody, pitch/loudness/formant curves, voice source, consonants, breaths
* ``dsp``            numpy signal building blocks (STFT filter, band-pass, reverb, panning, fades)
* this module        the public API (`synthesize_song`, `write_corpus`, `song_seed`) and the corpus files
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sepray.audio import write_audio
from sepray.data.synth.accompaniment import _accompaniment
from sepray.data.synth.dsp import _add_reverb, _fade, _peak, _rms, _room_impulse
from sepray.data.synth.song_plan import NOTE_NAMES, STYLES, _pick_style, _plan_song
from sepray.data.synth.vocals import _vocals
from sepray.errors import UsageError, UserPathError

__all__ = ["GENERATOR_VERSION", "SynthSong", "song_seed", "synthesize_song", "write_corpus"]

GENERATOR_VERSION = 1  # bump when the output changes: write_corpus then regenerates old songs


@dataclass
class SynthSong:
    """One synthetic song: `vocals` and `accompaniment` float32 (2, T); `meta` JSON-serializable."""

    vocals: np.ndarray
    accompaniment: np.ndarray
    meta: dict

    @property
    def mix(self) -> np.ndarray:
        return self.vocals + self.accompaniment


# ---------------------------------------------------------------- public API


def synthesize_song(seed: int, seconds: float, sample_rate: int = 16000) -> SynthSong:
    """Generate one song, deterministic for (seed, seconds, sample_rate)."""
    _check_arguments(seed, seconds, sample_rate)
    rng = np.random.default_rng(seed)
    style_name = _pick_style(rng)
    style, n = STYLES[style_name], int(round(seconds * sample_rate))
    plan = _plan_song(rng, style, seconds)
    accompaniment, instruments = _accompaniment(rng, plan, style, n, sample_rate)
    vocals, vocal_mask, vocal_meta = _vocals(rng, plan, n, sample_rate)
    room, rt60 = _room_impulse(rng, sample_rate)
    reverb = {
        "rt60_s": rt60,
        "vocal_wet": rng.uniform(0.1, 0.45),
        "accompaniment_wet": rng.uniform(0.05, 0.3),
    }
    vocals = _add_reverb(vocals, room, reverb["vocal_wet"])
    accompaniment = _add_reverb(accompaniment, room, reverb["accompaniment_wet"])
    vocal_meta["level_db"] = rng.uniform(-8.0, 4.0)  # vocal-to-accompaniment RMS ratio where singing
    if vocal_mask.any():
        ratio = _rms(vocals[:, vocal_mask]) / max(_rms(accompaniment[:, vocal_mask]), 1e-9)
        vocals *= 10 ** (vocal_meta["level_db"] / 20) / max(ratio, 1e-12)
    gain = rng.uniform(0.6, 0.9) / max(map(_peak, (vocals + accompaniment, vocals, accompaniment)))
    edge = _fade(np.ones(n), int(0.005 * sample_rate), int(0.005 * sample_rate))
    vocals, accompaniment = vocals * gain * edge, accompaniment * gain * edge
    meta = {
        "generator": "sepray.data.synth", "version": GENERATOR_VERSION, "seed": int(seed),
        "seconds": float(seconds), "sample_rate": int(sample_rate), "style": style_name,
        "key": NOTE_NAMES[plan.tonic], "mode": plan.mode, "tempo_bpm": plan.tempo, "swing": plan.swing,
        "time_signature": "4/4", "chord_degrees": [[c[2], c[3]] for c in plan.chords],
        "chord_beats": (plan.chords[0][1] - plan.chords[0][0]) // 4, "instruments": instruments,
        "vocal": vocal_meta, "reverb": reverb, "peak": float(np.abs(vocals + accompaniment).max()),
    }  # fmt: skip
    return SynthSong(vocals.astype(np.float32), accompaniment.astype(np.float32), _plain(meta))


def write_corpus(
    out_dir: str | os.PathLike, songs: int, seconds: float, seed: int, sample_rate: int = 16000
) -> list[Path]:
    """Write `songs` songs as CCMixter folders `out_dir/synth-<i>-<style>/`; return the folders in order.

    Song i is `synthesize_song(song_seed(seed, i), ...)`. Each folder is built under a hidden temporary
    name and renamed into place; folders already complete for these parameters are left untouched.
    """
    _check_arguments(seed, seconds, sample_rate)
    if songs < 1:
        raise UsageError(f"songs must be >= 1, got {songs}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserPathError(f"{out_dir}: exists and is not a folder; the corpus needs a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(out_dir)
    width = max(3, len(str(songs - 1)))
    folders = []
    for index in range(songs):
        child_seed = song_seed(seed, index)
        name = f"synth-{index:0{width}d}-{_pick_style(np.random.default_rng(child_seed))}"
        expected = _plain({"seed": child_seed, "seconds": float(seconds), "sample_rate": sample_rate})
        if not _is_complete(out_dir / name, expected):
            song = synthesize_song(child_seed, seconds, sample_rate)
            song.meta.update(name=name, corpus_seed=int(seed), index=index)
            _write_song_folder(out_dir / name, song, expected)
        folders.append(out_dir / name)
    return folders


def song_seed(seed: int, index: int) -> int:
    """Seed of song `index` in a corpus generated with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# ---------------------------------------------------------------- corpus files


def _write_song_folder(final: Path, song: SynthSong, expected: dict) -> None:
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        files = {"source-01.wav": song.accompaniment, "source-02.wav": song.vocals, "mix.wav": song.mix}
        for filename, audio in files.items():
            write_audio(tmp / filename, torch.from_numpy(audio), song.meta["sample_rate"])
        (tmp / "meta.json").write_text(json.dumps(song.meta, indent=2, sort_keys=True) + "\n")
        if _is_complete(final, expected):  # a concurrent writer finished the same song first
            return
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_complete(folder: Path, expected: dict) -> bool:
    names = ("mix.wav", "source-01.wav", "source-02.wav")
    if not all((folder / name).is_file() for name in names) or not (folder / "meta.json").is_file():
        return False
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("version") == GENERATOR_VERSION and all(meta.get(k) == v for k, v in expected.items())


def _remove_stale_temp_dirs(out_dir: Path, max_age_s: float = 3600.0) -> None:
    """Delete temporary song folders left by runs that were killed (an hour old: nobody still writes them)."""
    for path in out_dir.glob(".tmp-synth-*"):
        if path.is_dir() and time.time() - path.stat().st_mtime > max_age_s:
            shutil.rmtree(path, ignore_errors=True)


def _check_arguments(seed: int, seconds: float, sample_rate: int) -> None:
    if int(seed) < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"seconds must be a finite number > 0, got {seconds}")
    if sample_rate < 8000:
        raise UsageError(f"sample_rate must be >= 8000 Hz, got {sample_rate}")


def _plain(value):
    """numpy scalars -> Python, floats rounded, so meta is JSON-serializable and stable."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer | int):
        return int(value)
    if isinstance(value, np.floating | float):
        return round(float(value), 4)
    return value
