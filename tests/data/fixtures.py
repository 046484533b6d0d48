"""Small generated data sets in the layouts sepray reads: MIR-1K / iKala clips (stereo WAVs) and MUSDB18
``.stem.mp4`` files (5 AAC streams written with ffmpeg). Real audio files, never downloaded."""

from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path

import torch

from sepray.audio import ffmpeg_tools, write_audio

# clips per song of the two MIR-1K training singers (counted in the real data set's file names)
MIR1K_TRAINING_SONGS = {
    "abjones": {1: 4, 2: 12, 3: 10, 4: 8, 5: 9},
    "amy": {1: 7, 2: 7, 3: 8, 4: 11, 5: 8, 6: 11, 7: 8, 8: 8, 9: 9, 10: 8, 11: 7, 12: 7, 13: 7, 14: 6, 15: 12, 16: 8},
}  # fmt: skip
# clips of the 17 test singers (the real data set's counts; 825 in all)
MIR1K_TEST_SINGERS = {
    "Ani": 38, "Kenshin": 52, "annar": 42, "ariel": 40, "bobon": 50, "bug": 38, "davidson": 52, "fdps": 48,
    "geniusturtle": 69, "heycat": 40, "jmzen": 52, "khair": 44, "leon": 97, "stool": 45, "tammy": 8,
    "titon": 45, "yifen": 65,
}  # fmt: skip


def write_clip(path: Path, seconds: float = 0.25, sr: int = 8000, seed: int = 0):
    """One MIR-1K-style clip: stereo WAV, left = accompaniment, right = vocals. Returns (accompaniment,
    vocals), each (1, T), as written (float samples: exact)."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sr)
    acc = 0.4 * torch.rand(1, n, generator=g) - 0.2
    voc = 0.4 * torch.rand(1, n, generator=g) - 0.2
    write_audio(path, torch.cat([acc, voc]), sr, subtype="FLOAT")
    return acc, voc


def mir1k_folder(root: Path, clips: dict[str, dict[int, int]], seconds: float = 0.25, sr: int = 8000) -> Path:
    """``<singer>_<song>_<clip>.wav`` for ``clips = {singer: {song: number of clips}}``."""
    root.mkdir(parents=True, exist_ok=True)
    seed = 0
    for singer, songs in clips.items():
        for song, count in songs.items():
            for clip in range(1, count + 1):
                write_clip(root / f"{singer}_{song}_{clip:02d}.wav", seconds, sr, seed)
                seed += 1
    return root


def full_mir1k_names(root: Path) -> Path:
    """1000 clips named like the real MIR-1K (training singers' songs as there; test singers one song each),
    each a few samples long: enough to check the standard protocol's counts."""
    clips = dict(MIR1K_TRAINING_SONGS)
    clips.update({singer: {1: n} for singer, n in MIR1K_TEST_SINGERS.items()})
    return mir1k_folder(root, clips, seconds=0.002, sr=8000)


STEM_FREQS = (220.0, 330.0, 440.0, 550.0, 660.0)  # mixture, drums, bass, other, vocals: one tone each


def write_stem_mp4(path: Path, seconds: float = 1.0, sr: int = 16000, streams: int = 5) -> None:
    """A MUSDB18-style ``.stem.mp4``: ``streams`` stereo AAC streams, stream k a tone of STEM_FREQS[k]."""
    ffmpeg, _ = ffmpeg_tools(path)
    t = torch.arange(int(seconds * sr)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sepray-stem-") as tmp:
        inputs = []
        for k in range(streams):
            tone = 0.2 * torch.sin(2 * math.pi * STEM_FREQS[k] * t)
            wav = Path(tmp) / f"{k}.wav"
            write_audio(wav, torch.stack([tone, 0.5 * tone]), sr)
            inputs += ["-i", str(wav)]
        maps = [arg for k in range(streams) for arg in ("-map", f"{k}:a")]
        command = [ffmpeg, "-nostdin", "-y", "-v", "error", *inputs, *maps, "-c:a", "aac", "-b:a", "96k"]
        subprocess.run([*command, "-f", "mp4", str(path)], check=True, capture_output=True)


def dominant_frequency(x: torch.Tensor, sr: int) -> float:
    """Frequency (Hz) of the largest FFT bin of the first channel of (C, T) audio."""
    spectrum = torch.fft.rfft(x[0].double()).abs()
    return float(spectrum.argmax()) * sr / x.shape[-1]
