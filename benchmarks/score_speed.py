"""Time sepray.metrics.sdr_frames against museval.evaluate on 3 minutes of stereo 44.1 kHz audio (2 sources).

The signals are built from the shared 7 s MUSDB18-HQ excerpt: it is looped to 3 minutes, each pass with its own
stem gains and start offset, and the estimates leak a varying amount of the other source plus a little noise.
Prints both times, the speed-up and the largest per-frame difference in dB. Never fails on time.

    python benchmarks/score_speed.py [--seconds 180] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from sepray.audio import read_audio
from sepray.metrics import sdr_frames

RATE = 44100
EXCERPT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "musdb18hq-sample" / "train"
EXCERPT = EXCERPT / "Music Delta - 80s Rock"


def build_signals(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """-> references, estimates: float32 (2 sources [vocals, accompaniment], 2 channels, seconds * 44100)."""
    stems = {
        name: read_audio(EXCERPT / f"{name}.wav")[0].numpy() for name in ("vocals", "drums", "bass", "other")
    }
    rng = np.random.default_rng(seed)
    length = int(seconds * RATE)
    passes, total = [], 0
    while total < length:
        offset = int(rng.integers(0, RATE))  # each pass starts somewhere else in the excerpt
        gains = rng.uniform(0.6, 1.2, size=4)
        parts = [gain * stems[name][:, offset:] for gain, name in zip(gains, stems, strict=True)]
        passes.append(np.stack([parts[0], parts[1] + parts[2] + parts[3]]))  # (2, C, T')
        total += passes[-1].shape[-1]
    references = np.concatenate(passes, axis=-1)[:, :, :length].astype(np.float32)

    # Estimates: each source plus a slowly varying leak of the other one and some noise.
    leak = 0.3 + 0.2 * np.sin(2 * np.pi * np.arange(length) / (20 * RATE))  # (T,)
    noise = 0.01 * rng.standard_normal(references.shape)
    estimates = references + leak * references[::-1] + noise
    return references, estimates.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=5, help="runs of sdr_frames (the best is reported)")
    args = parser.parse_args()

    import museval  # needs an ffmpeg binary on PATH

    references, estimates = build_signals(args.seconds)
    print(f"signals: 2 sources x {references.shape[1]} channels x {references.shape[2]} samples at {RATE} Hz")

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = sdr_frames(references, estimates, RATE)
        times.append(time.perf_counter() - start)
    ours_time = min(times)

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = museval.evaluate(
            references.transpose(0, 2, 1), estimates.transpose(0, 2, 1), win=RATE, hop=RATE
        )[0]
    museval_time = time.perf_counter() - start

    same_nan = np.array_equal(np.isnan(ours), np.isnan(theirs))
    defined = ~np.isnan(theirs)
    max_diff = float(np.max(np.abs(ours[defined] - theirs[defined]))) if defined.any() else float("nan")
    print(f"frames: {ours.shape[1]} per source; NaN frames identical: {same_nan}")
    print(f"sepray sdr_frames : {ours_time:8.3f} s (best of {args.repeats})")
    print(f"museval.evaluate  : {museval_time:8.3f} s (SDR, ISR, SIR, SAR; v4)")
    print(f"speed-up          : {museval_time / ours_time:8.1f} x")
    print(f"max |difference|  : {max_diff:.3e} dB per frame")
    print(f"median SDR (museval v4) vocals/accompaniment: {np.nanmedian(ours, axis=1).round(3).tolist()}")


if __name__ == "__main__":
    main()
