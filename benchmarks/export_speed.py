"""End-to-end separation speed, eager against exported graphs: the default preset, the quickstart winner and a
paper-size Wave-U-Net.

Each model (random weights: speed does not depend on them) is saved as a package, exported (ONNX and
torch.export), and separates the same 30 s stereo 44.1 kHz WAV through ``sepray.separate.separate_file`` with
each engine: reading, resampling to the model's rate and back, the model, the full-band remainder and writing
the two WAVs, as ``sepray separate`` does (chunk length: the auto choice for a 2 GiB budget, as the CLI picks
it by default). Prints export time, wall time (best of ``--repeats``, the engines timed in turn) and x real time
per engine, the largest difference between an engine's WAVs and the first engine's (eager by default; 16-bit
files: one step is 3.1e-5), the load average before and after, the model's floating-point operations on the
song (torch's FLOP counter: what bounds the speed), and with ``--profile`` where the time of one run goes.

    python benchmarks/export_speed.py [--seconds 30] [--threads 2] [--repeats 3] [--only spec] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sepray.audio import read_audio, write_audio
from sepray.chunk_budget import auto_chunk_seconds, default_max_memory
from sepray.config import load_config
from sepray.export.engine import FORMATS
from sepray.export.package import export_package, load_package_engine
from sepray.models import build_model
from sepray.package import save_package
from sepray.separate import separate_file

SONG_SR = 44100
MODELS = {
    "spec-unet-small (sepray train's default): 4 levels / 8 ch / max 32, 8 kHz mono": ("spec-unet-small", []),
    "quickstart winner: spec_unet 4 levels / 12 ch / max 64, 8 kHz mono": (
        "spec-unet-small",
        ["model.levels=4", "model.channels=12", "model.max_channels=64"],
    ),
    "quickstart runner-up: spec_unet 3 levels / 12 ch / max 64, 8 kHz mono": (
        "spec-unet-small",
        ["model.levels=3", "model.channels=12", "model.max_channels=64"],
    ),
    "Wave-U-Net paper size: 12 levels / 24 ch, 22.05 kHz stereo": (
        "waveunet-small",
        [
            "data.sample_rate=22050",
            "data.channels=2",
            "model.audio_channels=2",
            "model.levels=12",
            "model.channels=24",
        ],
    ),
}
PROFILE_ROWS = 18


def build_package(preset: str, overrides: list[str], folder: Path) -> Path:
    cfg = load_config(preset, overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model_name, cfg.model).eval()
    return save_package(model, folder, cfg.model_name, cfg.data.sample_rate)


def model_gflop(model, rate: int, seconds: float) -> float:
    """Floating-point operations of the model on the song (both channels) at its rate, as torch counts them."""
    batch = 2 if model.audio_channels == 1 else 1
    mix = torch.zeros(batch, model.audio_channels, model.input_length(round(seconds * rate)))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(mix)
    return counter.get_total_flops() / 1e9


def timed_separation(model, info, song: Path, out: Path, chunk: float, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        separate_file(model, info, song, out, "cpu", chunk, show_progress=False)
        best = min(best, time.perf_counter() - start)
    return best


def profile_once(model, info, song: Path, out: Path, chunk: float) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(separate_file, model, info, song, out, "cpu", chunk, show_progress=False)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(PROFILE_ROWS)
    return text.getvalue()


def max_difference(a: Path, b: Path) -> float:
    return max(
        float((read_audio(a / name)[0] - read_audio(b / name)[0]).abs().max())
        for name in os.listdir(a)
        if name.endswith(".wav")
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default=None, help="only the models whose label contains this text")
    ap.add_argument("--engines", nargs="+", default=["torch", *FORMATS])
    ap.add_argument(
        "--profile", action="store_true", help="also print a cProfile summary of one run per engine"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.seconds:g} s stereo song at {SONG_SR} Hz, {args.threads} threads, best of {args.repeats}")
    with tempfile.TemporaryDirectory(prefix="sepray-export-speed-") as tmp:
        tmp = Path(tmp)
        song = tmp / "song.wav"
        gen = torch.Generator().manual_seed(0)
        write_audio(song, 0.1 * torch.randn(2, round(args.seconds * SONG_SR), generator=gen), SONG_SR)
        print(f"{'model':<70}{'engine':>14}{'export s':>10}{'wall s':>9}{'x real time':>13}{'max diff':>10}")
        for label, (preset, overrides) in MODELS.items():
            if args.only and args.only not in label:
                continue
            package = build_package(preset, overrides, tmp / f"package-{len(label)}")
            eager, info = load_package_engine(package, "torch")
            chunk = auto_chunk_seconds(eager, info.sample_rate, default_max_memory("cpu"))
            gflop = model_gflop(eager, info.sample_rate, args.seconds)
            params = sum(p.numel() for p in eager.parameters())
            print(
                f"{label}: {params:,} parameters, {chunk:.3g} s chunks, {gflop:.0f} GFLOP per song (model only)"
            )
            models, exports = {}, {}
            for engine in args.engines:  # export first, then time the engines in turn (a loaded machine's
                start = time.perf_counter()  # load drifts: interleaved repeats share it)
                if engine != "torch":
                    export_package(package, engine)
                exports[engine] = time.perf_counter() - start if engine != "torch" else 0.0
                models[engine], _ = load_package_engine(package, engine)
            walls = {engine: float("inf") for engine in args.engines}
            for _ in range(args.repeats):
                for engine, model in models.items():
                    out = tmp / f"out-{engine}"
                    walls[engine] = min(walls[engine], timed_separation(model, info, song, out, chunk, 1))
            profiles = {}
            for engine, wall in walls.items():
                diff = max_difference(
                    tmp / f"out-{engine}" / song.stem, tmp / f"out-{args.engines[0]}" / song.stem
                )
                print(
                    f"{'':<70}{engine:>14}{exports[engine]:>10.1f}{wall:>9.2f}{args.seconds / wall:>13.1f}{diff:>10.2g}",
                    flush=True,
                )
                if args.profile:
                    profiles[engine] = profile_once(models[engine], info, song, tmp / "out-profile", chunk)
            for engine, text in profiles.items():
                print(f"--- profile: {label}, {engine}\n{text}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
