"""Separation quality for a fixed CPU budget on the built-in synthetic corpus.

Trains each separator for ``--seconds`` of wall-clock training time (plus validation), then separates the full
test songs and prints test SDR per source (museval v4 framewise median, median over songs) and its gain over
two trivial estimates: the unprocessed mixture and half the mixture for each source.

    python benchmarks/quality_quick.py --seconds 180 [--threads 2] [--models waveunet wavenet-regression ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from sepray import SOURCES
from sepray.config import load_config
from sepray.data import load_splits
from sepray.evaluate import evaluate_songs
from sepray.train import Trainer

CANDIDATES = {
    "waveunet": ("waveunet-small", []),
    "wavenet-regression": ("wavenet-small", ["model.head=regression"]),
    "wavenet-mulaw": ("wavenet-small", []),
    "stft_mask": (
        "waveunet-small",
        ["model={name: stft_mask, n_fft: 256, hop: 64}", "train.segment_seconds=2.0"],
    ),
}


def run(name: str, seconds: float, threads: int) -> dict:
    preset, overrides = CANDIDATES[name]
    overrides = [
        *overrides,
        f"train.max_seconds={seconds}",
        "train.epochs=100000",
        f"train.threads={threads}",
    ]
    cfg = load_config(preset, overrides)
    splits = load_splits(cfg.data)
    trainer = Trainer(cfg, splits)
    start = time.perf_counter()
    while not trainer.finished:
        trainer.train_epoch()
        valid = trainer.validate()
    wall = time.perf_counter() - start
    result = evaluate_songs(trainer.model, splits["test"], cfg.data.sample_rate, trainer.device)
    return {
        "name": name,
        "params": trainer.num_parameters,
        "steps": trainer.step,
        "wall": wall,
        "valid_sdr": valid["valid_sdr"],
        "test": result["median"],
        "mix": result["baselines"]["mix"],
        "half": result["baselines"]["halfmix"],
        "songs": len(splits["test"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0, help="training wall-clock budget per model")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--models", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    args = ap.parse_args()
    rows = [run(name, args.seconds, args.threads) for name in args.models]
    print(
        f"\nTest SDR (dB; museval v4 framewise median, median over {rows[0]['songs']} synthetic test songs), "
        f"{args.seconds:g} s CPU training budget, {args.threads} threads"
    )
    head = f"{'model':<20}{'params':>10}{'steps':>7}" + "".join(
        f"{s + ' SDR':>18}{'vs mix':>8}{'vs mix/2':>9}" for s in SOURCES
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['name']:<20}{r['params']:>10,}{r['steps']:>7}"
        for s in SOURCES:
            line += f"{r['test'][s]:>18.2f}{r['test'][s] - r['mix'][s]:>+8.2f}{r['test'][s] - r['half'][s]:>+9.2f}"
        print(line)
    base = rows[0]
    print(f"{'(mixture)':<37}" + "".join(f"{base['mix'][s]:>18.2f}{'':>17}" for s in SOURCES))
    print(f"{'(half the mixture)':<37}" + "".join(f"{base['half'][s]:>18.2f}{'':>17}" for s in SOURCES))


if __name__ == "__main__":
    main()
