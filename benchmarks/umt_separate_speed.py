"""Time to separate a song with the autoregressive UMT (untrained, default decoder size unless --small).

``python benchmarks/umt_separate_speed.py --seconds 30 --rate 16000 --threads 2`` runs ``separate_file`` (the
``sepray separate`` code path: 30 s chunks, each generated as 1 s segments side by side) on a synthetic song;
``--measure-steps N`` instead times N steps of the first chunk's generation (its 1 s segments side by side in
one batch) and extrapolates to the whole song (a quick figure on a loaded machine; the encoder pass, a small
part, is left out). Prints the seconds and the real-time factor.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sepray.models import build_model
from sepray.models.generation import cached_generate
from sepray.package import load_package, save_package
from sepray.separate import separate_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--measure-steps", type=int, default=0, help="time this many steps and extrapolate")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model("umt", {"decoder": "autoregressive"})  # reference sizes: 4 x 10 layers, 128 channels
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_package(model, tmp / "pkg", "umt", args.rate)
        model, info = load_package(tmp / "pkg", "cpu")
        t = np.arange(int(args.seconds * args.rate)) / args.rate
        sf.write(tmp / "song.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), args.rate)
        steps_per_call = model.sequential_steps(model.output_length(model.input_length(int(30 * args.rate))))
        samples = int(args.seconds * args.rate)
        start = time.perf_counter()
        if args.measure_steps:  # the generation of the first chunk: its segments side by side, N steps
            segments = -(-min(samples, int(30 * args.rate)) // steps_per_call)
            cond = torch.randn(segments, model.config.latent_channels, args.measure_steps)
            cached_generate(model.decoder, cond)
        else:
            separate_file(model, info, tmp / "song.wav", tmp / "out", "cpu", 30.0, show_progress=False)
        elapsed = time.perf_counter() - start
    chunks = -(-samples // int(30 * args.rate))
    total = elapsed * chunks * steps_per_call / args.measure_steps if args.measure_steps else elapsed
    how = (
        f"extrapolated from {args.measure_steps} of {chunks * steps_per_call} steps"
        if args.measure_steps
        else "measured"
    )
    print(f"{args.seconds:g} s at {args.rate} Hz, {args.threads} threads: {total:.0f} s ({how}), "
          f"{args.seconds / total:.3f}x real time")  # fmt: skip


if __name__ == "__main__":
    main()
