"""Separation quality of each family's preset (and of any logged run, e.g. a sweep's best) on songs it was
tested on and on songs it never saw.

For each candidate: train it with its own config (a preset, optionally with ``--set`` style overrides) and
time the training, or load a logged model (``--run-id``). Then separate and score, museval v4 exact
(framewise median SDR, median over songs):

* ``test``: the test songs of the candidate's own data config (the built-in corpus unless it names a folder);
* ``unseen``: ``--unseen-songs`` songs of the built-in generator drawn with ``--unseen-seed`` (a seed no
  preset trains on), at the candidate's sample rate;
* ``other``: as many songs from a second, unrelated generator written here (:func:`other_song`: a voice of
  random harmonic amplitudes, jitter and noise bursts over plucked square-wave chords, a saw pad and noise
  percussion), so a model tuned to the built-in generator's timbres shows it.

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

import numpy as np
import torch

from sepray import SOURCES
from sepray.config import load_config
from sepray.data import load_splits
from sepray.data.corpus import Song
from sepray.evaluate import evaluate_songs
from sepray.train import Trainer

SPLITS = ("test", "unseen", "other")
# label -> (preset, overrides). The quickstart rows are the quickstart sweep's winners' configurations,
# trained alone (a sweep trial is deterministic for its seed, so this is the model the sweep selected).
QUICKSTART_DATA = ["data.synth_songs=16", "data.synth_seconds=15.0", "train.valid_crops=8"]
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "spec-unet-small": ("spec-unet-small", []),
    "waveunet-small": ("waveunet-small", []),
    "wavenet-small": ("wavenet-small", []),
    "structure-a-small": ("structure-a-small", []),
    "umt-small": ("umt-small", []),
    "quickstart winner (spec_unet)": (
        "spec-unet-small",
        [
            *QUICKSTART_DATA,
            "model.levels=3",
            "model.channels=12",
            "model.max_channels=64",
            "train.lr=0.003442713203251717",
            "train.lr_decay=0.75",
            "train.epochs=8",
            "train.steps_per_epoch=32",
        ],
    ),
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


def other_song(seed: int, seconds: float, rate: int) -> Song:
    """One song of the second generator: (1, T) mono vocals and accompaniment at ``rate``."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    # voice: notes of 0.2-0.8 s, pitch 150-700 Hz gliding, 1-3 s phrases with gaps, random harmonic envelope
    f0 = np.zeros(n)
    amp = np.zeros(n)
    pos = 0
    while pos < n:
        phrase = int(rng.uniform(1, 3) * rate)
        end = min(n, pos + phrase)
        while pos < end:
            note = min(end - pos, int(rng.uniform(0.2, 0.8) * rate))
            f0[pos : pos + note] = 150 * 2 ** rng.uniform(0, 2.2)
            amp[pos : pos + note] = rng.uniform(0.5, 1.0)
            pos += note
        pos = min(n, pos + int(rng.uniform(0.3, 1.2) * rate))
    kernel = np.hanning(int(0.05 * rate)) / np.hanning(int(0.05 * rate)).sum()
    f0 = np.convolve(np.where(f0 > 0, f0, np.nan_to_num(np.maximum.accumulate(f0))), kernel, "same")
    amp = np.convolve(amp, kernel, "same")
    f0 = f0 * (1 + 0.004 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1)))  # jitter drift
    phase = 2 * np.pi * np.cumsum(f0) / rate
    vocals = np.zeros(n)
    weights = rng.uniform(0, 1, 40) / (1 + np.arange(40)) ** rng.uniform(0.5, 1.5)
    for k, w in enumerate(weights, start=1):
        vocals += w * np.sin(k * phase) * (k * f0 < rate / 2)
    bursts = rng.standard_normal(n) * (rng.uniform(0, 1, n // 400 + 1).repeat(400)[:n] > 0.93)
    vocals = amp * vocals + 0.3 * bursts * amp.max()
    # accompaniment: plucked square chords, a saw pad, kick and noise hats
    acc = np.zeros(n)
    beat = 60 / rng.uniform(80, 140)
    root = 110 * 2 ** (rng.integers(0, 12) / 12)
    for start in np.arange(0, seconds, beat):
        s0 = int(start * rate)
        dur = min(n - s0, int(beat * rate * 2))
        tt = np.arange(dur) / rate
        chord = root * 2 ** (np.array([0, 4, 7, 12]) / 12 + rng.integers(0, 3) * 5 / 12)
        for f in chord:
            acc[s0 : s0 + dur] += 0.15 * np.sign(np.sin(2 * np.pi * f * tt)) * np.exp(-tt * 4)
        acc[s0 : s0 + dur] += 0.6 * np.sin(2 * np.pi * 55 * tt * np.exp(-tt * 8)) * np.exp(-tt * 10)
        hat = int(0.03 * rate)
        if s0 + hat < n:
            acc[s0 : s0 + hat] += 0.2 * rng.standard_normal(hat) * np.exp(-np.arange(hat) / (0.01 * rate))
    pad = sum(((t * root * r) % 1.0 - 0.5) for r in (1.0, 1.5, 2.01))
    acc += 0.08 * pad * (0.6 + 0.4 * np.sin(2 * np.pi * 0.2 * t))
    vocals *= 0.25 / (np.sqrt(np.mean(vocals**2)) + 1e-9) * rng.uniform(0.6, 1.4)
    acc *= 0.25 / (np.sqrt(np.mean(acc**2)) + 1e-9)
    peak = max(1.0, np.abs(vocals + acc).max() / 0.95)
    v = torch.from_numpy(vocals / peak).float()[None]
    a = torch.from_numpy(acc / peak).float()[None]
    return Song(f"other-{seed}", v + a, {"vocals": v, "accompaniment": a})


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
            "other": score(
                model,
                [other_song(args.unseen_seed + i, 15.0, rate) for i in range(args.unseen_songs)],
                rate,
                device,
            ),
            "test_songs": len(test_songs),
        }
        rows.append(row)
        print(format_row(row), flush=True)
    print(
        f"\nSDR in dB (museval v4 framewise median, median over songs); gain = over the better trivial "
        f"estimate (mixture or half mixture); worst = the worst song's gain over its own; unseen = "
        f"{args.unseen_songs} songs of the built-in generator, seed {args.unseen_seed}; other = as many "
        f"of the second generator; "
        f"{args.threads} threads"
    )
    head = f"{'candidate':<38}{'params':>9}{'train s':>8}{'steps':>6}"
    for split in SPLITS:
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
    for split in SPLITS:
        for s in SOURCES:
            v = row[split][s]
            line += f"  {v['sdr']:>6.2f} {v['gain']:>+6.2f} {v['worst']:>+7.2f}"
    return line


if __name__ == "__main__":
    main()
