"""How much of a training step waits on data: batches drawn in the step vs ahead in a thread.

For each case, a real ``Trainer`` on the synthetic corpus trains one warm-up epoch, then ``--steps`` measured
steps, once with ``train.prefetch_batches: 0`` (crop sampling and augmentation in the step) and once with the
default 2 (drawn ahead in a background thread; pinned memory and non-blocking copies on CUDA). The data wait
share is the Trainer's own ``data_wait_share`` metric: the share of the epoch's wall time spent in the step's
wait for its batch (with 0: drawing it). ``draw ms`` is one batch drawn alone, on the calling thread.

Cases (``--cases``, comma-separated):

* ``quickstart``: a quickstart trial (spec_unet, 3 levels, 12 channels, max 64; 8 kHz mono, batch 8 x 1 s,
  source gains);
* ``waveunet-small``, ``umt-small``: the presets (umt-small pitch-shifts half of its crops);
* ``musdb-like``: a Wave-U-Net at 44.1 kHz stereo, batch 8 x 1 s, gains and a pitch shift on half of the crops
  (the heaviest augmentation sepray has, at MUSDB18-HQ's rate).

Prints figures only, never passes or fails.

    python benchmarks/data_wait.py [--cases quickstart,waveunet-small,umt-small] [--threads 1] [--steps 24]
        [--device cpu|cuda] [--depths 0,2] [--pitch-profile]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import replace
from pathlib import Path

import torch

from sepray import names
from sepray.config import RunConfig, load_config
from sepray.sweep.spec import load_spec
from sepray.train import Trainer

QUICKSTART = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"


def case_config(name: str, threads: int) -> RunConfig:
    """The run config of a case, trained with ``threads`` torch threads."""
    if name == "quickstart":
        sampled = {"model.levels": 3, "model.channels": 12, "train.lr": 2e-3}
        cfg = load_spec(QUICKSTART).resolve_trial(sampled)
    elif name == "musdb-like":
        musdb = [
            "data.sample_rate=44100",
            "data.channels=2",
            "data.synth_songs=6",
            "data.synth_seconds=8",
            "data.augment.pitch_shift_prob=0.5",
            "model.levels=6",
            "model.channels=24",
            "train.batch_size=8",
            "train.segment_seconds=1.0",
            "train.valid_crops=2",
            "train.valid_seconds=1.0",
        ]
        cfg = load_config("waveunet-small", musdb)
    else:
        cfg = load_config(name)
    return replace(cfg, train=replace(cfg.train, threads=threads))


def draw_ms(trainer: Trainer, repeats: int = 5) -> float:
    """Median milliseconds to draw one training batch on the calling thread (a copy of the sampler's state)."""
    state = trainer.sampler.state_dict()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.sampler.labelled_batch(trainer.cfg.train.batch_size)
        times.append(time.perf_counter() - start)
    trainer.sampler.load_state_dict(state)
    return 1000 * sorted(times)[len(times) // 2]


def measure(
    cfg: RunConfig,
    depth: int,
    steps: int,
    device: str,
    amp: bool | None = None,
    around=contextlib.nullcontext,
) -> dict[str, float]:
    """One warm-up epoch, then ``steps`` measured steps (inside ``around()``) -> steps/s, data wait share, draw ms,
    final loss."""
    train = replace(cfg.train, prefetch_batches=depth, steps_per_epoch=steps, epochs=2)
    if amp is not None:
        train = replace(train, amp=amp)
    trainer = Trainer(replace(cfg, train=train), device=device)
    drawn = draw_ms(trainer)
    trainer.train_epoch()  # warm-up: allocator, kernels, the first batches
    with around():
        metrics = trainer.train_epoch()
    trainer.batches.close()
    return {
        names.STEPS_PER_SECOND: metrics[names.STEPS_PER_SECOND],
        names.DATA_WAIT_SHARE: metrics[names.DATA_WAIT_SHARE],
        "draw_ms": drawn,
        names.TRAIN_LOSS: metrics[names.TRAIN_LOSS],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="quickstart,waveunet-small,umt-small")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: as a sweep trial of cpu: 1)"
    )
    parser.add_argument("--steps", type=int, default=24, help="measured steps per run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depths", default="0,2", help="prefetch_batches values to compare")
    parser.add_argument(
        "--pitch-profile",
        action="store_true",
        help="also: one batch drawn alone with a pitch shift on no / half / every crop (each case)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",") if d]  # --depths "": the pitch profile only
    if args.pitch_profile:
        for name in args.cases.split(","):
            cfg = case_config(name, args.threads)
            trainer = Trainer(replace(cfg, train=replace(cfg.train, prefetch_batches=0)), device="cpu")
            times = []
            for prob in (0.0, 0.5, 1.0):
                trainer.sampler.augment = replace(cfg.data.augment, pitch_shift_prob=prob)
                times.append(f"{draw_ms(trainer):.1f}")
            print(
                f"{name}: one batch drawn alone, pitch shift on no / half / every crop: {' / '.join(times)} ms"
            )
    if not depths:
        return
    print(f"device {args.device}, {args.threads} torch thread(s), {args.steps} measured steps per run")
    head = ["case", "batch", "draw ms"] + [f"steps/s p={d}" for d in depths] + [f"wait p={d}" for d in depths]
    rows = []
    for name in args.cases.split(","):
        cfg = case_config(name, args.threads)
        results = [measure(cfg, d, args.steps, args.device) for d in depths]
        losses = {r[names.TRAIN_LOSS] for r in results}
        same = "same losses" if len(losses) == 1 else f"LOSSES DIFFER {sorted(losses)}"
        shape = f"{cfg.train.batch_size} x {cfg.train.segment_seconds:g} s @ {cfg.data.sample_rate} Hz x {cfg.data.channels}"
        rows.append(
            [name, shape, f"{results[0]['draw_ms']:.1f}"]
            + [f"{r[names.STEPS_PER_SECOND]:.2f}" for r in results]
            + [f"{100 * r[names.DATA_WAIT_SHARE]:.1f} %" for r in results]
        )
        print(f"{name}: {same}", flush=True)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for line in [head, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
