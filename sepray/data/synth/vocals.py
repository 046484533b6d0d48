"""The singing voice: a melody on the plan, control curves, a glottal source through vowel formants, noises."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sepray.data.synth.dsp import _bandpass, _fade, _pan, _rms, _slow_noise, _smooth, _stft_filter
from sepray.data.synth.song_plan import _Plan

CONTROL_RATE = 200  # Hz: rate of the vocal pitch / loudness / formant curves
# fmt: off
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
# fmt: on


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
