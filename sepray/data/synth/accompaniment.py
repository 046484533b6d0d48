"""The accompaniment: 2-3 chord instruments, bass and drums played from the song plan, mixed to stereo."""

from __future__ import annotations

import numpy as np

from sepray.data.synth.dsp import _bandpass, _fade, _hz, _pan, _rms, _seconds
from sepray.data.synth.song_plan import Style, _Plan

# fmt: off
# 16-step grid, gate (fraction of the gap to the next onset), arpeggiated (one chord note per onset).
PATTERNS = {"hold": ("x...............", 1.0, False), "strum4": ("x...x...x...x...", 0.95, False),
            "strum8": ("x.x.x.x.x.x.x.x.", 0.9, False), "rock": ("x..x..x...x.x...", 0.9, False),
            "offbeat": ("..x...x...x...x.", 0.4, False), "funk": ("x..x.x..x.xx.x..", 0.35, False),
            "arp8": ("x.x.x.x.x.x.x.x.", 2.0, True), "arp16": ("xxxxxxxxxxxxxxxx", 1.5, True)}
# fmt: on


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
