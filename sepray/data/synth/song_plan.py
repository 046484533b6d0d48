"""The plan of a song: style, key, mode, tempo, swing, chord progression, and which sections are sung."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# fmt: off
MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
         "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10)}
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 0), (1, 4, 0, 5), (0, 6, 5, 4), (0, 5, 2, 6), (5, 3, 0, 4))
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
