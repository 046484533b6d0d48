"""Separation speed against the reference separators: HT-Demucs and Open-Unmix, on the same song and threads.

All models are randomly initialised (speed does not depend on the weights, and nothing is downloaded): the
reference models are built from their own packages with the architecture of their released models
(HT-Demucs: the class defaults, 4 sources, applied in 10 s segments with 25 % overlap and one shift, as
`demucs` separates; Open-Unmix: UMX-HQ, 4 targets of 3 LSTM layers x 512 over a 4096-point STFT, one Wiener
iteration, as `umx` separates). sepray's models run through `separate_tensor` with the resampling from the
song's 44.1 kHz to the model's rate and back included. Prints wall time and real-time factor per model.

Needs the reference packages (the `bench` extra; their code is only imported):
    pip install -e ".[bench]"
    python benchmarks/reference_speed.py [--seconds 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from sepray.config import load_config
from sepray.dsp import resample
from sepray.models import build_model
from sepray.separate import separate_tensor

SONG_SR = 44100


def htdemucs():
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    model = HTDemucs(sources=["drums", "bass", "other", "vocals"]).eval()

    def run(mix: torch.Tensor) -> None:
        apply_model(model, mix[None], shifts=1, split=True, overlap=0.25, progress=False)

    return model, run


def open_unmix():
    from openunmix.model import OpenUnmix, Separator
    from openunmix.utils import bandwidth_to_max_bin

    max_bin = bandwidth_to_max_bin(SONG_SR, 4096, 16000)
    targets = {
        name: OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=max_bin)
        for name in ("vocals", "drums", "bass", "other")
    }
    model = Separator(targets, niter=1, residual=False, n_fft=4096, n_hop=1024, sample_rate=SONG_SR).eval()

    def run(mix: torch.Tensor) -> None:
        model(mix[None])

    return model, run


def sepray_model(preset: str, overrides: list[str]):
    def build():
        cfg = load_config(preset, overrides)
        model = build_model(cfg.model_name, cfg.model).eval()
        sr = cfg.data.sample_rate

        def run(mix: torch.Tensor) -> None:
            out = separate_tensor(model, resample(mix, SONG_SR, sr), 10.0, sr)
            for est in out.values():
                resample(est, sr, SONG_SR)

        return model, run

    return build


MODELS = {
    "HT-Demucs (htdemucs architecture)": htdemucs,
    "Open-Unmix (umxhq architecture)": open_unmix,
    "sepray Wave-U-Net, paper size, 22.05 kHz stereo": sepray_model(
        "waveunet-small",
        [
            "data.sample_rate=22050",
            "data.channels=2",
            "model.audio_channels=2",
            "model.levels=12",
            "model.channels=24",
        ],
    ),
    "sepray waveunet-small (8 kHz)": sepray_model("waveunet-small", []),
    "sepray wavenet-small, regression (8 kHz)": sepray_model("wavenet-small", ["model.head=regression"]),
    "sepray stft_mask (8 kHz)": sepray_model(
        "waveunet-small", ["model={name: stft_mask, n_fft: 256, hop: 64}"]
    ),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--only", default=None, help="run only the models whose label contains this text")
    args = ap.parse_args()
    try:
        import demucs  # noqa: F401
        import openunmix  # noqa: F401
    except ImportError as exc:
        print(f"error: {exc.name} is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mix = torch.randn(2, round(args.seconds * SONG_SR)) * 0.1
    print(f"{args.seconds:g} s stereo song at {SONG_SR} Hz, {args.threads} threads, random weights")
    print(f"{'model':<50}{'params':>12}{'wall s':>9}{'x real time':>13}")
    for label, build in MODELS.items():
        if args.only and args.only not in label:
            continue
        torch.manual_seed(0)
        model, run = build()
        params = sum(p.numel() for p in model.parameters())
        with torch.inference_mode():
            start = time.perf_counter()
            run(mix)
            wall = time.perf_counter() - start
        print(f"{label:<50}{params:>12,}{wall:>9.2f}{args.seconds / wall:>13.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
