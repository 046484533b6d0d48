"""Separation quality of each family's preset (and of any logged run, e.g. a sweep's best) on songs it was
tested on and on songs it never saw.

For each candidate: train it with its own config (a preset, optionally with ``--set`` style overrides) and
time the training, or load a logged model (``--run-id``). Then separate and score, museval v4 exact
(framewise median SDR, median over songs):

* ``test``: the test songs of the candidate's own data config (the built-in corpus unless it names a folder);
* ``unseen``: ``--unseen-songs`` songs of the built-in generator drawn with ``--unseen-seed`` (a seed no
  preset trains on), at the candidate's sample rate.

Printed per candidate and source: SDR, the gain over the better trivial estimate (the mixture, or half the
mixture for each source; the better of the two over the songs), and the worst song's gain over its own
better trivial estimate (negative: some song's estimate is worse than doing nothing). Prints figures only.

    python benchmarks/quality_quick.py [--candidates spec-unet-small waveunet-small ...] [--run-id RUN ...]
        [--threads 2] [--unseen-seed 1000] [--unseen-songs 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from sepray import SOURCES
from sepray.config import load_config
from sepray.data import load_splits
from sepray.evaluate import evaluate_songs
from sepray.train import Trainer

# label -> (preset, overrides). The quickstart rows are the quickstart sweep's winners' configurations,
# trained alone (a sweep trial is deterministic for its seed, so this is the model the sweep selected).
QUICKSTART_DATA = ["data.synth_songs=16", "data.synth_seconds=15.0", "train.valid_crops=8"]
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "spec-unet-small": ("spec-unet-small", []),
    "waveunet-small": ("waveunet-small", []),
    "wavenet-small": ("wavenet-small", []),
    "structure-a-small": ("structure-a-small", []),
    "umt-small": ("umt-small", []),
    "quickstart winner before (waveunet)": (
        "waveunet-small",
        [
            *QUICKSTART_DATA,
            "model.levels=4",
            "model.channels=16",
            "model.upsampling=linear",
            "train.lr=0.002758",
            "train.epochs=4",
            "train.steps_per_epoch=32",
        ],
    ),
}


def unseen_songs(cfg, seed: int, count: int) -> list:
    """``count`` songs of the built-in generator drawn with ``seed``, prepared like ``cfg``'s data."""
    data = dataclasses.replace(
        cfg.data, path=None, layout="auto", synth_seed=seed, synth_songs=count, valid_fraction=0.0
    )
    splits = load_splits(data)
    return [song for split in ("train", "valid", "test") for song in splits.get(split, [])]


def score(model, songs, rate: int, device) -> dict:
    """{source: {"sdr", "gain", "worst_gain"}} over ``songs``."""
    result = evaluate_songs(model, songs, rate, device)
    out = {}
    for s in SOURCES:
        trivial = max(b[s] for b in result["baselines"].values())
        per_song = []
        for name, values in result["songs"].items():
            song_trivial = max(per_base[name][s] for per_base in result["song_baselines"].values())
            per_song.append(values[s] - song_trivial)
        out[s] = {"sdr": result["median"][s], "gain": result["median"][s] - trivial, "worst": min(per_song)}
    return out


def train_candidate(preset: str, overrides: list[str], threads: int):
    cfg = load_config(preset, [*overrides, f"train.threads={threads}"])
    splits = load_splits(cfg.data)
    trainer = Trainer(cfg, splits)
    start = time.perf_counter()
    while not trainer.finished:
        trainer.train_epoch()
        trainer.validate()
    return trainer.model, cfg, splits["test"], time.perf_counter() - start, trainer.step, trainer.device


def logged_candidate(run_id: str):
    from sepray import tracking
    from sepray.config import run_config_from_dict
    from sepray.separate import load_run_model

    model, info = load_run_model(run_id)
    cfg = run_config_from_dict(tracking.load_run_config(run_id), f"run {run_id}")
    splits = load_splits(dataclasses.replace(cfg.data, sample_rate=info.sample_rate))
    return model, cfg, splits["test"], float("nan"), 0, torch.device("cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--run-id", nargs="*", default=[], help="also score these logged runs' models")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--unseen-seed", type=int, default=1000)
    ap.add_argument("--unseen-songs", type=int, default=6)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    jobs = [
        (label, lambda p=CANDIDATES[label]: train_candidate(*p, args.threads)) for label in args.candidates
    ]
    jobs += [(f"run {rid[:8]}", lambda r=rid: logged_candidate(r)) for rid in args.run_id]
    for label, job in jobs:
        model, cfg, test_songs, seconds, steps, device = job()
        rate = cfg.data.sample_rate
        row = {
            "candidate": label,
            "model": cfg.model_name,
            "params": sum(p.numel() for p in model.parameters()),
            "train_seconds": seconds,
            "steps": steps,
            "test": score(model, test_songs, rate, device),
            "unseen": score(model, unseen_songs(cfg, args.unseen_seed, args.unseen_songs), rate, device),
            "test_songs": len(test_songs),
        }
        rows.append(row)
        print(format_row(row), flush=True)
    print(
        f"\nSDR in dB (museval v4 framewise median, median over songs); gain = over the better trivial "
        f"estimate (mixture or half mixture); worst = the worst song's gain over its own; unseen = "
        f"{args.unseen_songs} songs of the built-in generator, seed {args.unseen_seed}; "
        f"{args.threads} threads"
    )
    head = f"{'candidate':<38}{'params':>9}{'train s':>8}{'steps':>6}"
    for split in ("test", "unseen"):
        for s in SOURCES:
            head += f"  {split[:6] + ' ' + s[:5]:>22}"
    print(head)
    print("-" * len(head))
    for row in rows:
        print(format_row(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def format_row(row: dict) -> str:
    line = f"{row['candidate']:<38}{row['params']:>9,}{row['train_seconds']:>8.0f}{row['steps']:>6}"
    for split in ("test", "unseen"):
        for s in SOURCES:
            v = row[split][s]
            line += f"  {v['sdr']:>6.2f} {v['gain']:>+6.2f} {v['worst']:>+7.2f}"
    return line


if __name__ == "__main__":
    main()
