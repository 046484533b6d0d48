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

GENERATOR_VERSION = 1  # bump when the output changes: write_corpus then regenerates old songs
CONTROL_RATE = 200  # Hz: rate of the vocal pitch / loudness / formant curves
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# fmt: off
MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
         "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10)}
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 0), (1, 4, 0, 5), (0, 6, 5, 4), (0, 5, 2, 6), (5, 3, 0, 4))
# Tenor vowel formants (Csound table): centre Hz, bandwidth Hz, level dB for F1..F5.
VOWELS = {
    "a": ((650, 1080, 2650, 2900, 3250), (80, 90, 120, 130, 140), (0, -6, -7, -8, -22)),
    "e": ((400, 1700, 2600, 3200, 3580), (70, 80, 100, 120, 120), (0, -14, -12, -14, -20)),
    "i": ((290, 1870, 2800, 3250, 3540), (40, 90, 100, 120, 120), (0, -15, -18, -20, -30)),
    "o": ((400, 800, 2600, 2800, 3000), (40, 80, 100, 120, 120), (0, -11, -21, -20, -40)),
    "u": ((350, 600, 2700, 2900, 3300), (40, 60, 100, 120, 120), (0, -20, -32, -28, -36)),
}
# Consonants and breath: noise band (Hz), duration range (s), level relative to the sung RMS.
NOISES = {"s": (4000, 7800, (0.06, 0.12), 0.35), "sh": (1800, 4500, (0.06, 0.12), 0.3),
          "f": (1200, 7000, (0.05, 0.10), 0.12), "h": (500, 3000, (0.04, 0.08), 0.1),
          "t": (2500, 7000, (0.01, 0.02), 0.5), "k": (1200, 3200, (0.015, 0.03), 0.45),
          "breath": (400, 2500, (0.2, 0.45), 0.08)}
CONSONANTS = ("f", "h", "k", "s", "sh", "t")
# 16-step grid, gate (fraction of the gap to the next onset), arpeggiated (one chord note per onset).
PATTERNS = {"hold": ("x...............", 1.0, False), "strum4": ("x...x...x...x...", 0.95, False),
            "strum8": ("x.x.x.x.x.x.x.x.", 0.9, False), "rock": ("x..x..x...x.x...", 0.9, False),
            "offbeat": ("..x...x...x...x.", 0.4, False), "funk": ("x..x.x..x.xx.x..", 0.35, False),
            "arp8": ("x.x.x.x.x.x.x.x.", 2.0, True), "arp16": ("xxxxxxxxxxxxxxxx", 1.5, True)}
# fmt: on


@dataclass(frozen=True)
class Style:
    tempo: tuple[float, float]
    modes: tuple[str, ...]
    chord_parts: tuple[tuple[str, str], ...]  # (instrument, pattern) pool: 2-3 distinct instruments drawn
    bass: str  # 16 steps: r root, f fifth, o octave, . rest
    drums: tuple[str, str, str]  # kick, snare, hi-hat; X accent, x hit, g ghost, o open hat
    drum_chance: float = 1.0
    sevenths: float = 0.2
    swing_chance: float = 0.0


# fmt: off
STYLES = {
    "rock": Style((100, 152), ("major", "minor", "mixolydian"),
                  (("guitar", "strum8"), ("guitar", "rock"), ("organ", "hold"), ("pad", "hold"), ("epiano", "strum4")),
                  "r.r.r.r.r.r.r.r.", ("X.....x.X.......", "....X.......X...", "x.x.x.x.x.x.x.x.")),
    "ballad": Style((66, 92), ("major", "minor"),
                    (("epiano", "hold"), ("epiano", "arp8"), ("pad", "hold"), ("guitar", "arp8"), ("organ", "hold")),
                    "r.......f.......", ("X.........x.....", "....x.......x...", "x...x...x...x..."),
                    drum_chance=0.8, sevenths=0.5, swing_chance=0.3),
    "electronic": Style((118, 140), ("minor", "dorian", "major"),
                        (("pad", "hold"), ("pad", "offbeat"), ("epiano", "offbeat"), ("guitar", "arp16"),
                         ("organ", "offbeat")),
                        "..r...r...r...r.", ("X...X...X...X...", "....X.......X...", "x.o.x.o.x.o.x.o."),
                        sevenths=0.3),
    "funk": Style((88, 116), ("dorian", "mixolydian", "minor"),
                  (("epiano", "funk"), ("guitar", "funk"), ("organ", "hold"), ("pad", "offbeat")),
                  "r..o..r.r..f.ro.", ("X..x..x...X..x..", "....X..g.g..X..g", "xxxxxxxxxxxxxxxx"),
                  sevenths=0.8, swing_chance=0.5),
    "folk": Style((76, 124), ("major", "mixolydian", "minor"),
                  (("guitar", "strum8"), ("guitar", "arp8"), ("organ", "hold"), ("epiano", "strum4")),
                  "r...f...r...f...", ("X.......x.......", "................", "..x...x...x...x."),
                  drum_chance=0.5, swing_chance=0.4),
}
# fmt: on


@dataclass
class SynthSong:
    """One synthetic song: `vocals` and `accompaniment` float32 (2, T); `meta` JSON-serializable."""

    vocals: np.ndarray
    accompaniment: np.ndarray
    meta: dict

    @property
    def mix(self) -> np.ndarray:
        return self.vocals + self.accompaniment


@dataclass
class _Plan:
    tonic: int  # pitch class of the key
    mode: str
    tempo: float
    swing: float  # delay of odd 16th steps, in steps
    n_steps: int  # 16th-note steps covering the song
    chords: list[tuple[int, int, int, bool]]  # (start step, end step, root scale degree, seventh)
    sections: list[tuple[int, int, bool]]  # (start step, end step, vocal active)

    def time(self, step: int) -> float:
        return (step + self.swing * (step % 2)) * 15.0 / self.tempo

    def midi(self, degree: int, base: int = 48) -> int:
        return base + self.tonic + 12 * (degree // 7) + MODES[self.mode][degree % 7]

    def chord_at(self, step: int) -> tuple[int, int, int, bool]:
        return next((c for c in self.chords if c[0] <= step < c[1]), self.chords[-1])


@dataclass
class _Note:
    start: float  # seconds
    end: float
    degree: int
    velocity: float
    vowel: str
    consonant: str | None
    phrase_start: bool
    phrase_end: bool
    scoop: float  # semitones below the note at its onset


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
    out_dir = Path(out_dir)
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
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be >= 8000 Hz, got {sample_rate}")


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


# ---------------------------------------------------------------- song plan


def _pick_style(rng: np.random.Generator) -> str:
    names = sorted(STYLES)
    return names[rng.integers(len(names))]


def _plan_song(rng: np.random.Generator, style: Style, seconds: float) -> _Plan:
    tempo = rng.uniform(*style.tempo)
    mode = style.modes[rng.integers(len(style.modes))]
    swing = rng.uniform(0.1, 0.3) if rng.random() < style.swing_chance else 0.0
    n_bars = max(1, math.ceil(seconds * tempo / 240.0))
    chord_steps = 8 if tempo < 110 and rng.random() < 0.3 else 16
    progressions = [PROGRESSIONS[i] for i in rng.choice(len(PROGRESSIONS), 2, replace=False)]
    sevenths = rng.random((2, 4)) < style.sevenths
    section_steps = 16 * (4 if n_bars >= 8 else 2)
    chords, sections = [], []
    for k, start in enumerate(range(0, n_bars * 16, section_steps)):
        end = min(start + section_steps, n_bars * 16)
        sections.append((start, end, True))
        for j, step in enumerate(range(start, end, chord_steps)):
            chords.append(
                (step, step + chord_steps, progressions[k % 2][j % 4], bool(sevenths[k % 2, j % 4]))
            )
    plan = _Plan(int(rng.integers(12)), mode, tempo, swing, n_bars * 16, chords, sections)
    plan.sections = [
        (s, e, bool(on)) for (s, e, _), on in zip(sections, _vocal_sections(rng, len(sections)), strict=True)
    ]
    return plan


def _vocal_sections(rng: np.random.Generator, count: int) -> np.ndarray:
    """Which sections are sung: all (40%), none (15%) or a mix with at least one of each (45%)."""
    mode = rng.choice(3, p=[0.4, 0.15, 0.45])
    if mode < 2 or count < 2:
        return np.full(count, mode != 1)
    active = rng.random(count) < 0.6
    if active.all():
        active[rng.integers(count)] = False
    if not active.any():
        active[rng.integers(count)] = True
    return active


# ---------------------------------------------------------------- accompaniment


def _accompaniment(rng, plan: _Plan, style: Style, n: int, sr: int) -> tuple[np.ndarray, dict]:
    parts = []  # (name, mono track, params)
    wanted, used = int(rng.integers(2, 4)), set()
    for i in rng.permutation(len(style.chord_parts)):
        instrument, pattern = style.chord_parts[i]
        if instrument in used or len(used) == wanted:
            continue
        used.add(instrument)
        voice, params = VOICES[instrument](rng, sr)
        low = int(rng.integers(50, 60))  # voicing register, overlapping the singer's
        track = _render_events(_chord_events(rng, plan, pattern, low, instrument == "guitar"), voice, n, sr)
        if "cutoff_hz" in params:
            track = _bandpass(track, sr, 0.0, params["cutoff_hz"])
        parts.append((instrument, track, {**params, "pattern": pattern, "low_midi": low}))
    voice, params = _bass_voice(rng, sr)
    parts.append(("bass", _render_events(_bass_events(rng, plan, style.bass), voice, n, sr), params))
    if rng.random() < style.drum_chance:
        parts += _drum_parts(rng, plan, style, n, sr)
    stereo, meta = np.zeros((2, n)), {}
    for name, track, params in parts:
        level_db = rng.uniform(-4.0, 1.0) if name in ("bass", "kick") else rng.uniform(-7.0, 0.0)
        pan = rng.uniform(-0.2, 0.2) if name in ("bass", "kick", "snare") else rng.uniform(-0.8, 0.8)
        stereo += _pan(track * 10 ** (level_db / 20) / max(_rms(track), 1e-9), pan)
        meta[name] = {**params, "level_db": level_db, "pan": pan}
    return stereo, meta


def _onset_steps(plan: _Plan, grid: str, extra=()) -> list[int]:
    hits = [i for i, c in enumerate(grid) if c != "."]
    steps = {bar + i for bar in range(0, plan.n_steps, 16) for i in hits} | set(extra)
    return sorted(s for s in steps if s < plan.n_steps)


def _voicing(plan: _Plan, chord, low: int) -> list[int]:
    root, seventh = chord[2], chord[3]
    degrees = (root, root + 2, root + 4) + ((root + 6,) if seventh else ())
    return sorted(low + (plan.midi(d) - low) % 12 for d in degrees)


def _chord_events(rng, plan: _Plan, pattern: str, low: int, strum: bool) -> list[tuple]:
    """(start s, duration s, frequency Hz, velocity) for one chord instrument."""
    grid, gate, arpeggio = PATTERNS[pattern]
    steps = _onset_steps(plan, grid, [c[0] for c in plan.chords])
    events = []
    for k, step in enumerate(steps):
        following = steps[k + 1] if k + 1 < len(steps) else plan.n_steps
        start = max(0.0, plan.time(step) + rng.normal(0, 0.004))
        dur = (plan.time(following) - plan.time(step)) * gate
        notes = _voicing(plan, plan.chord_at(step), low)
        velocity = (0.9 if step % 4 == 0 else 0.7) * rng.uniform(0.85, 1.0)
        if arpeggio:
            cycle = notes + notes[-2:0:-1]  # up and down
            events.append((start, dur, _hz(cycle[k % len(cycle)]), velocity))
            continue
        spread, upstroke = (rng.uniform(0.008, 0.025), step % 4 == 2) if strum else (0.0, False)
        for j, midi in enumerate(notes[::-1] if upstroke else notes):
            events.append((start + j * spread, dur, _hz(midi), velocity * (0.8 if upstroke else 1.0)))
    return events


def _bass_events(rng, plan: _Plan, grid: str) -> list[tuple]:
    steps = _onset_steps(plan, grid, [c[0] for c in plan.chords])
    events = []
    for k, step in enumerate(steps):
        following = steps[k + 1] if k + 1 < len(steps) else plan.n_steps
        root_degree = plan.chord_at(step)[2]
        root = 28 + (plan.midi(root_degree) - 28) % 12
        offset = {"o": 12, "f": plan.midi(root_degree + 4) - plan.midi(root_degree)}.get(grid[step % 16], 0)
        dur = (plan.time(following) - plan.time(step)) * 0.85
        events.append((plan.time(step), dur, _hz(root + offset), rng.uniform(0.75, 1.0)))
    return events


def _render_events(events, voice, n: int, sr: int, release_s: float = 0.04) -> np.ndarray:
    out = np.zeros(n)
    release = max(1, int(release_s * sr))
    for start, dur, freq, velocity in events:
        i0 = int(start * sr)
        length = min(int(dur * sr) + release, n - i0)
        if length > 1:
            out[i0 : i0 + length] += _fade(voice(freq, length) * velocity, int(0.002 * sr), release)
    return out


# -------- instrument voices: (rng, sr) -> (voice(freq, n) -> mono array, params)


def _pad_voice(rng, sr):
    detune, attack = rng.uniform(4, 14), rng.uniform(0.08, 0.4)
    params = {"timbre": "detuned saws", "detune_cents": detune, "cutoff_hz": rng.uniform(1500, 5000)}

    def voice(freq, n):
        saws = sum(_saw(freq * 2 ** (c * detune / 1200), n, sr, rng.random()) for c in (-1, 0, 1))
        return saws * np.minimum(1.0, np.arange(n) / (attack * sr))

    return voice, params


def _epiano_voice(rng, sr):
    index, decay = rng.uniform(1.0, 3.5), rng.uniform(0.8, 2.5)

    def voice(freq, n):
        t = _seconds(n, sr)
        body = np.sin(2 * np.pi * freq * t + index * np.exp(-t / 0.4) * np.sin(2 * np.pi * freq * t))
        tine_ratio = 14 if 15 * freq < 0.45 * sr else 1
        tine = np.sin(2 * np.pi * freq * t + 1.5 * np.sin(2 * np.pi * tine_ratio * freq * t))
        return (body + 0.3 * tine * np.exp(-t / 0.05)) * np.exp(-t / decay)

    return voice, {"timbre": "FM electric piano", "mod_index": index, "decay_s": decay}


def _organ_voice(rng, sr):
    ratios = np.array([0.5, 1, 2, 3, 4, 6, 8], dtype=np.float32)
    drawbars = rng.uniform(0, 1, len(ratios)) * (rng.random(len(ratios)) < 0.7)
    drawbars[1] = max(drawbars[1], 0.6)
    tremolo = rng.uniform(0, 0.3)

    def voice(freq, n):
        t = _seconds(n, sr)
        keep = ratios * freq < 0.45 * sr
        partials = np.sin(
            2 * np.pi * freq * ratios[keep, None] * t
            + rng.uniform(0, 6.3, (keep.sum(), 1)).astype(np.float32)
        )
        return drawbars[keep] @ partials * (1 + tremolo * np.sin(2 * np.pi * 5.7 * t))

    return voice, {"timbre": "additive organ", "drawbars": drawbars.tolist(), "tremolo": tremolo}


def _guitar_voice(rng, sr):
    decay, brightness = rng.uniform(0.8, 3.0), rng.uniform(0.3, 1.0)
    cache: dict[float, np.ndarray] = {}

    def voice(freq, n):
        if freq not in cache:
            cache[freq] = _karplus_strong(rng, freq, int(sr * min(3.0, decay + 0.5)), sr, decay, brightness)
        tone = cache[freq][:n]
        return np.pad(tone, (0, n - len(tone)))

    return voice, {"timbre": "Karplus-Strong guitar", "decay_s": decay, "brightness": brightness}


def _bass_voice(rng, sr):
    slope, n_harmonics = (1.6, 6) if rng.random() < 0.6 else (1.0, 14)
    damping = rng.uniform(1.0, 4.0)

    def voice(freq, n):
        t = _seconds(n, sr)
        k = np.arange(1, n_harmonics + 1, dtype=np.float32)[:, None]
        amps = k**-slope * (k * freq < 0.45 * sr)
        return np.sum(amps * np.exp(-t * damping * (0.3 + k)) * np.sin(2 * np.pi * k * freq * t), axis=0)

    return voice, {"timbre": "finger" if n_harmonics == 6 else "synth", "damping": damping}


VOICES = {"pad": _pad_voice, "epiano": _epiano_voice, "organ": _organ_voice, "guitar": _guitar_voice}


def _saw(freq: float, n: int, sr: int, phase: float) -> np.ndarray:
    """Band-limited (polyBLEP) sawtooth."""
    dt = freq / sr
    p = (phase + dt * np.arange(n, dtype=np.float32)) % 1.0
    y = 2 * p - 1
    lo, hi = p < dt, p > 1 - dt
    x = p[lo] / dt  # just after the wrap
    y[lo] -= 2 * x - x * x - 1
    x = (p[hi] - 1) / dt  # just before the wrap
    y[hi] -= x * x + 2 * x + 1
    return y


def _karplus_strong(rng, freq: float, n: int, sr: int, decay_s: float, brightness: float) -> np.ndarray:
    """Plucked string: delay line with a 3-tap lowpass (fractional delay), one period per numpy step."""
    period = sr / freq
    delay = int(round(period))
    frac = period - delay  # in [-0.5, 0.5]: shifts the lowpass centre
    taps = (0.25 - frac / 2, 0.5, 0.25 + frac / 2)  # at delays delay-1, delay, delay+1
    gain = 10 ** (-3 / (decay_s * freq))  # -60 dB after decay_s
    excitation = rng.uniform(-1, 1, delay + 1)
    smooth = np.convolve(excitation, np.ones(3) / 3, mode="same")
    y = np.zeros(n + delay + 1)
    y[: delay + 1] = brightness * excitation + (1 - brightness) * smooth
    y[: delay + 1] -= y[: delay + 1].mean()  # no DC: it would decay slower than the tone
    for start in range(delay + 1, len(y), delay - 1):
        stop = min(start + delay - 1, len(y))
        back = slice(start - delay + 1, stop - delay + 1), slice(start - delay, stop - delay)
        y[start:stop] = gain * (
            taps[0] * y[back[0]] + taps[1] * y[back[1]] + taps[2] * y[start - delay - 1 : stop - delay - 1]
        )
    return y[delay + 1 :]


# -------- drums


def _drum_parts(rng, plan: _Plan, style: Style, n: int, sr: int) -> list[tuple]:
    """kick, snare, hi-hat tracks: per-song samples placed on the style's grid, with fills and humanizing."""
    samples, params = _drum_samples(rng, sr)
    last_bars = {e - 16 for _, e, _ in plan.sections}
    parts = []
    for name, grid in zip(("kick", "snare", "hihat"), style.drums, strict=True):
        track = np.zeros(n)
        for bar in range(0, plan.n_steps, 16):
            fill = name == "snare" and bar in last_bars and rng.random() < 0.5
            for i, char in enumerate(grid):
                char = "x" if fill and i >= 12 else char  # a snare run into the next section
                if char == "." or rng.random() < 0.04:  # the odd missed hit
                    continue
                sample = samples["open" if char == "o" else name]
                i0 = max(0, int((plan.time(bar + i) + rng.normal(0, 0.003)) * sr))
                velocity = {"X": 1.0, "g": 0.3}.get(char, 0.75) * rng.uniform(0.85, 1.05)
                stop = min(n, i0 + len(sample))
                if stop > i0:
                    track[i0:stop] += velocity * sample[: stop - i0]
        parts.append((name, track, params[name]))
    return parts


def _drum_samples(rng, sr: int):
    def time_axis(seconds):
        return _seconds(int(seconds * sr), sr)

    t = time_axis(0.45)
    f_high, f_low, kick_decay = rng.uniform(90, 160), rng.uniform(40, 60), rng.uniform(0.12, 0.3)
    sweep = f_low + (f_high - f_low) * np.exp(-t / 0.035)
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sr) * np.exp(-t / kick_decay)
    click = int(0.004 * sr)
    kick[:click] += 0.3 * rng.standard_normal(click)
    t = time_axis(0.35)
    tone, snare_decay = rng.uniform(170, 250), rng.uniform(0.08, 0.18)
    rattle = _bandpass(rng.standard_normal(len(t)), sr, 1200, 0.45 * sr) * np.exp(-t / snare_decay)
    snare = 0.5 * np.sin(2 * np.pi * tone * t) * np.exp(-t / 0.05) + rattle
    hat_low, closed_decay = min(6000.0, 0.3 * sr), rng.uniform(0.02, 0.05)
    t = time_axis(0.6)
    hiss = _bandpass(rng.standard_normal(len(t)), sr, hat_low, 0.48 * sr)
    closed = (hiss * np.exp(-t / closed_decay))[: int(0.15 * sr)]
    open_hat = hiss * np.exp(-t / rng.uniform(0.12, 0.3))
    samples = {"kick": kick, "snare": snare, "hihat": closed, "open": open_hat}
    params = {"kick": {"sweep_hz": [f_high, f_low], "decay_s": kick_decay},
              "snare": {"tone_hz": tone, "decay_s": snare_decay}, "hihat": {"closed_decay_s": closed_decay}}  # fmt: skip
    return samples, params


# ---------------------------------------------------------------- vocals


def _vocals(rng, plan: _Plan, n: int, sr: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Stereo dry vocals (zero outside sung sections), the sung-sample mask, and the singer's meta."""
    register = "high" if rng.random() < 0.5 else "low"
    low, high = (57, 79) if register == "high" else (46, 67)
    singer = {
        "formant_scale": (1.12 if register == "high" else 1.0) * rng.uniform(0.94, 1.06),
        "vibrato_rate_hz": rng.uniform(4.5, 6.8), "vibrato_depth_semitones": rng.uniform(0.1, 0.6),
        "glide_ms": rng.uniform(40, 160), "vowel_transition_ms": rng.uniform(50, 130),
        "breathiness": rng.uniform(0.05, 0.4), "tilt_hz": rng.uniform(150, 500), "tilt_power": rng.uniform(0.8, 1.5),
    }  # fmt: skip
    sections = [
        {"start": plan.time(s), "end": min(plan.time(e), n / sr), "active": on} for s, e, on in plan.sections
    ]
    meta = {"register": register, "range_midi": [low, high], "sections": sections, **singer}
    mask = np.zeros(n)
    for s in sections:
        mask[int(s["start"] * sr) : int(s["end"] * sr)] = float(s["active"])
    edges = np.flatnonzero(np.diff(mask, prepend=0, append=0))  # starts and ends of sung spans
    for i0, i1 in zip(edges[::2], edges[1::2], strict=True):
        _fade(mask[i0:i1], int(0.015 * sr), int(0.015 * sr))
    if not mask.any():
        meta.update(mode="none", notes=0)
        return np.zeros((2, n)), mask > 0, meta
    notes = _melody(rng, plan, low, high)
    meta.update(mode="full" if all(s["active"] for s in sections) else "sections", notes=len(notes))
    return _pan(_sing(rng, plan, notes, singer, n, sr) * mask, rng.uniform(-0.15, 0.15)), mask > 0.5, meta


def _melody(rng, plan: _Plan, low: int, high: int) -> list[_Note]:
    """Phrases of syllable notes on the scale, chord tones favoured on beats, rests between phrases."""
    degrees = [d for d in range(-21, 42) if low <= plan.midi(d) <= high]
    degree = int(rng.choice(degrees[2:-2]))
    moves, weights = (-3, -2, -1, 0, 1, 2, 3, 4, -4), np.array([1, 3, 5, 2, 5, 3, 1, 0.5, 0.5])
    notes: list[_Note] = []
    for start, end, on in plan.sections:
        step = start + int(rng.choice([0, 2, 4]))
        while on and end - step >= 6:
            phrase_end = step + min(int(rng.choice([16, 24, 32])), end - step)
            first = True
            while step < phrase_end:
                length = min(int(rng.choice([2, 2, 4, 4, 4, 6, 8])), phrase_end - step)
                degree = int(
                    np.clip(degree + rng.choice(moves, p=weights / weights.sum()), degrees[0], degrees[-1])
                )
                if step % 4 == 0 and rng.random() < 0.7:
                    degree = _nearest_chord_tone(degree, plan.chord_at(step)[2], degrees)
                new_syllable = first or rng.random() < 0.75
                notes.append(
                    _Note(
                        plan.time(step), plan.time(step + length), degree, rng.uniform(0.7, 1.0),
                        str(rng.choice(list("aaeeioou"))) if new_syllable else notes[-1].vowel,
                        str(rng.choice(CONSONANTS)) if new_syllable and rng.random() < 0.6 else None,
                        first, False, rng.uniform(0.3, 1.0) if rng.random() < 0.3 else 0.0,
                    )
                )  # fmt: skip
                step, first = step + length, False
            notes[-1].phrase_end = True
            step += int(rng.choice([2, 4, 4, 8]))
    return notes


def _nearest_chord_tone(degree: int, root: int, allowed: list[int]) -> int:
    tones = [d for d in allowed if (d - root) % 7 in (0, 2, 4)]
    return min(tones, key=lambda d: abs(d - degree)) if tones else degree


def _sing(rng, plan: _Plan, notes: list[_Note], singer: dict, n: int, sr: int) -> np.ndarray:
    """Mono voice: glottal pulse train * loudness -> time-varying formant filter, plus consonant noise."""
    n_ctrl = int(n / sr * CONTROL_RATE) + 2
    midi, loudness, formants = _vocal_controls(rng, plan, notes, singer, n_ctrl)
    t_ctrl, t = np.arange(n_ctrl) / CONTROL_RATE, np.arange(n) / sr
    f0 = 440.0 * 2 ** ((np.interp(t, t_ctrl, midi) - 69) / 12)
    theta = 2 * np.pi * (np.cumsum(f0 / sr) % 1.0)
    # Band-limited pulse train: harmonics 1..K of equal amplitude (closed-form Dirichlet sum), K following
    # f0 up to 0.45 sr, the next harmonic faded in by the fractional part so K changes without clicks.
    harmonics = 0.45 * sr / f0
    whole = np.floor(harmonics)
    half = np.sin(theta / 2)
    safe = np.abs(half) > 1e-12
    dirichlet = np.where(safe, np.sin((whole + 0.5) * theta) / (2 * np.where(safe, half, 1)) - 0.5, whole)
    pulse = dirichlet + (harmonics - whole) * np.cos((whole + 1) * theta)
    glottal_noise = rng.standard_normal(n) * (0.5 + 0.5 * np.cos(theta)) ** 2  # pulse-synchronous
    amplitude = np.interp(t, t_ctrl, loudness)
    source = (pulse + singer["breathiness"] * np.sqrt(harmonics) * glottal_noise) * amplitude

    def envelope(frame_times, freqs):  # (frames,) s, (bins,) Hz -> (frames, bins) filter gain
        f = freqs.astype(np.float32)[None, :, None]
        centre, width, level = (
            np.stack([np.interp(frame_times, t_ctrl, c) for c in x.T], 1)[:, None].astype(np.float32)
            for x in formants
        )
        resonances = level / np.sqrt(1 + ((f**2 - centre**2) / (np.maximum(f, 1.0) * width)) ** 2)
        return resonances.sum(-1) * (1 + (freqs / singer["tilt_hz"]) ** 2) ** (-singer["tilt_power"] / 2)

    voiced = _stft_filter(source, envelope, sr)
    voiced /= max(_rms(voiced[loudness[(t * CONTROL_RATE).astype(int)] > 0.1]), 1e-9)
    return voiced + _noise_bursts(rng, _burst_list(rng, notes), n, sr)


def _vocal_controls(rng, plan: _Plan, notes: list[_Note], singer: dict, n_ctrl: int):
    """Control-rate curves: pitch (MIDI, with glides, scoops, vibrato), loudness, formants (F, BW, level)."""
    cr = CONTROL_RATE

    def idx(seconds: float) -> int:
        return min(int(seconds * cr), n_ctrl)

    target = np.full(n_ctrl, float(plan.midi(notes[0].degree)))  # held between notes
    loudness, depth, scoops = np.zeros(n_ctrl), np.zeros(n_ctrl), np.zeros(n_ctrl)
    vowel_tracks = np.zeros((n_ctrl, 3, 5)) + VOWELS[notes[0].vowel]  # (time, centre/width/level, formant)
    for note in notes:
        i0, i1 = idx(note.start), idx(note.end)
        if i1 <= i0:
            continue
        target[i0:] = plan.midi(note.degree)
        vowel_tracks[i0:] = VOWELS[note.vowel]
        seg = np.arange(i1 - i0) / cr
        attack = 0.01 if note.consonant is None and not note.phrase_start else rng.uniform(0.03, 0.08)
        env = note.velocity * np.minimum(1.0, seg / attack) * np.exp(-seg / rng.uniform(1.5, 4.0))
        if note.phrase_end:
            env *= np.clip((seg[-1] - seg) / rng.uniform(0.08, 0.2), 0, 1)
        loudness[i0:i1] = env
        depth[i0:i1] = np.clip((seg - rng.uniform(0.12, 0.3)) / 0.25, 0, 1)
        scoops[i0:i1] = -note.scoop * np.exp(-seg / 0.06)
    glide = np.hanning(max(3, int(singer["glide_ms"] / 1000 * cr)))
    pitch = np.convolve(np.pad(target, (len(glide) - 1, 0), mode="edge"), glide / glide.sum(), mode="valid")
    rate = singer["vibrato_rate_hz"] * (1 + 0.12 * _slow_noise(rng, n_ctrl, cr, 0.8))
    depth = _smooth(depth, int(0.05 * cr)) * singer["vibrato_depth_semitones"]
    depth *= 1 + 0.3 * _slow_noise(rng, n_ctrl, cr, 1.0)
    vibrato = depth * np.sin(2 * np.pi * np.cumsum(rate) / cr)
    midi = pitch + scoops + vibrato + 0.08 * _slow_noise(rng, n_ctrl, cr, 0.5)
    vowel_tracks[:, 0] *= singer["formant_scale"]
    vowel_tracks[:, 2] = 10 ** (vowel_tracks[:, 2] / 20)
    vowel_tracks = _smooth(vowel_tracks, int(singer["vowel_transition_ms"] / 1000 * cr))
    return midi, _smooth(loudness, int(0.015 * cr)), tuple(vowel_tracks[:, k] for k in range(3))


def _burst_list(rng, notes: list[_Note]) -> list[tuple[float, float, str]]:
    """(start s, duration s, kind): consonants at syllable onsets, breaths before phrases."""
    bursts = []
    for k, note in enumerate(notes):
        if note.consonant:
            dur = rng.uniform(*NOISES[note.consonant][2])
            bursts.append((max(0.0, note.start - 0.6 * dur), dur, note.consonant))
        gap = note.start - notes[k - 1].end if k else note.start
        if note.phrase_start and gap > 0.3 and rng.random() < 0.7:
            dur = min(gap - 0.1, rng.uniform(*NOISES["breath"][2]))
            bursts.append((note.start - dur - 0.05, dur, "breath"))
    return bursts


def _noise_bursts(rng, bursts, n: int, sr: int) -> np.ndarray:
    """Band-limited noise bursts (unit-variance noise in the band, sine-shaped envelope) at NOISES levels."""
    out = np.zeros(n)
    for start, dur, kind in bursts:
        low, high, _, level = NOISES[kind]
        high = min(high, 0.48 * sr)
        low = min(low, 0.5 * high)  # at low sample rates the band slides down below Nyquist
        i0, length = max(0, int(start * sr)), max(8, int(dur * sr))
        length = min(length, n - i0)
        if length < 8:
            continue
        band = _bandpass(rng.standard_normal(length + 256), sr, low, high)[128:-128]
        shape = np.sin(np.linspace(0, np.pi, length)) ** (0.5 if kind in ("t", "k") else 2)
        out[i0 : i0 + length] += level * shape * band / np.sqrt((high - low) / (sr / 2))
    return out


# ---------------------------------------------------------------- signal helpers


def _stft_filter(
    x: np.ndarray, gain_fn, sr: int, n_fft: int = 1024, hop: int = 256, block: int = 256
) -> np.ndarray:
    """Time-varying filter: multiply each Hann STFT frame by gain_fn(frame centre times, bin freqs)."""
    n, overlap = len(x), n_fft // hop
    padded = np.pad(x, (n_fft, n_fft))  # every kept sample is covered by `overlap` frames
    n_frames = (len(padded) - n_fft) // hop + 1
    window, freqs = np.hanning(n_fft + 1)[:-1], np.fft.rfftfreq(n_fft, 1 / sr)
    out = np.zeros((n_frames + overlap, hop))
    for f0 in range(0, n_frames, block):
        frames = np.arange(f0, min(f0 + block, n_frames))
        segments = padded[frames[:, None] * hop + np.arange(n_fft)] * window
        spectrum = np.fft.rfft(segments, axis=1) * gain_fn((frames * hop - n_fft // 2) / sr, freqs)
        filtered = (np.fft.irfft(spectrum, n_fft, axis=1) * window).reshape(len(frames), overlap, hop)
        for j in range(overlap):
            out[f0 + j : f0 + j + len(frames)] += filtered[:, j]
    norm = np.sum(window.reshape(overlap, hop) ** 2, axis=0)  # constant overlap-add gain per phase
    return (out.reshape(-1) / np.tile(norm, n_frames + overlap))[n_fft : n_fft + n]


def _bandpass(x: np.ndarray, sr: int, low: float, high: float) -> np.ndarray:
    """Zero-phase 4th-order-like band-pass in the frequency domain (low=0: low-pass)."""
    size = _fft_size(len(x) + 64)  # a little zero padding keeps the circular wrap-around negligible
    freqs = np.fft.rfftfreq(size, 1 / sr)
    gain = 1 / np.sqrt(1 + (freqs / high) ** 8)
    if low > 0:
        gain /= np.sqrt(1 + (low / np.maximum(freqs, 1e-3)) ** 8)
    return np.fft.irfft(np.fft.rfft(x, size) * gain, size)[: len(x)]


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    size = _fft_size(len(x) + len(h) - 1)
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast for numpy's FFT, much less padding than a power of two)."""
    best, p5 = 1 << max(0, n - 1).bit_length(), 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            best = min(best, p35 << max(0, math.ceil(math.log2(n / p35))))
            p35 *= 3
        p5 *= 5
    return best


def _room_impulse(rng, sr: int) -> tuple[np.ndarray, float]:
    """Stereo decorrelated exponentially decaying noise (unit energy per channel) and its RT60."""
    rt60 = rng.uniform(0.3, 1.2)
    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal((2, len(t))) * np.exp(-6.9 * t / rt60)
    ir[:, : int(rng.uniform(0.005, 0.03) * sr)] = 0.0  # pre-delay
    return ir / np.sqrt(np.sum(ir**2, axis=1, keepdims=True)), rt60


def _add_reverb(stereo: np.ndarray, ir: np.ndarray, wet: float) -> np.ndarray:
    if not stereo.any():
        return stereo
    return np.stack([stereo[c] + wet * _fft_convolve(stereo[c], ir[c]) for c in range(2)])


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    angle = (pan + 1) * np.pi / 4  # constant power, pan in [-1, 1]
    return np.stack([np.cos(angle) * mono, np.sin(angle) * mono])


def _fade(y: np.ndarray, n_in: int, n_out: int) -> np.ndarray:
    n_in, n_out = min(n_in, len(y) // 2), min(n_out, len(y) // 2)
    y[:n_in] *= np.linspace(0, 1, n_in, endpoint=False)
    y[len(y) - n_out :] *= np.linspace(1, 0, n_out)
    return y


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Hann-window moving average along axis 0, same length (edges held)."""
    if width < 3:
        return x
    w = np.hanning(width) / np.hanning(width).sum()
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (x.ndim - 1)
    padded = np.pad(x, pad, mode="edge")
    return np.apply_along_axis(lambda col: np.convolve(col, w, mode="valid"), 0, padded)


def _slow_noise(rng, n: int, rate: float, period_s: float) -> np.ndarray:
    """Smooth random curve in about [-1, 1], changing every ~period_s seconds."""
    knots = rng.uniform(-1, 1, int(n / rate / period_s) + 2)
    return np.interp(np.arange(n) / rate / period_s, np.arange(len(knots)), knots)


def _seconds(n: int, sr: int) -> np.ndarray:
    """Time axis of an n-sample note or sample, float32 (fast transcendental functions; notes are short)."""
    return np.arange(n, dtype=np.float32) / np.float32(sr)


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _peak(x: np.ndarray) -> float:
    return float(np.abs(x).max())
