"""Full-song separation speed of each registered model (randomly initialised: speed does not depend on weights).

Prints seconds of audio separated per second of wall time (real-time factor) for a 60 s stereo 44.1 kHz song
through `separate_tensor` (resampling to the model rate excluded), and peak chunk size.

    python benchmarks/separate_speed.py [--seconds 60] [--threads 2] [--chunk 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from sepray.config import load_config
from sepray.models import build_model
from sepray.separate import separate_tensor

MODELS = {
    "waveunet-small": ("waveunet-small", []),
    "wavenet-small (mu-law)": ("wavenet-small", []),
    "wavenet-small (regression)": ("wavenet-small", ["model.head=regression"]),
    "stft_mask": ("waveunet-small", ["model={name: stft_mask, n_fft: 256, hop: 64}"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--chunk", type=float, default=10.0, help="chunk length in seconds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.seconds:g} s stereo song, {args.threads} threads, {args.chunk:g} s chunks")
    print(f"{'model':<28}{'rate':>7}{'params':>10}{'wall s':>9}{'x real time':>13}")
    for label, (preset, overrides) in MODELS.items():
        cfg = load_config(preset, overrides)
        torch.manual_seed(0)
        model = build_model(cfg.model_name, cfg.model).eval()
        sr = cfg.data.sample_rate
        mix = torch.randn(2, round(args.seconds * sr)) * 0.1
        start = time.perf_counter()
        separate_tensor(model, mix, args.chunk, sr)
        wall = time.perf_counter() - start
        params = sum(p.numel() for p in model.parameters())
        print(f"{label:<28}{sr:>7}{params:>10,}{wall:>9.2f}{args.seconds / wall:>13.1f}")


if __name__ == "__main__":
    main()
