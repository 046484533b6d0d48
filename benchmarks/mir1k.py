"""MIR-1K figures with the standard protocol (train on abjones + amy, test on the other 825 clips of 17 singers;
BSS Eval v3 over each whole clip at 16 kHz, NSDR, GNSDR / GSIR / GSAR weighted by clip length), compared with
the published numbers. Prints figures; never passes or fails.

    # the laptop sweep from an empty cache: wall time, the load average, then its winner's figures
    python benchmarks/mir1k.py sweep --data /path/to/MIR-1K/Wavfile [--spec sweeps/mir1k.yaml] [--set KEY=VALUE]
    # any logged run (a sweep's trial, a `sepray train` run, even one trained on other data) on the test clips
    python benchmarks/mir1k.py run --data /path/to/MIR-1K/Wavfile --run-id RUN [--clips 0]
    # one prototype: train a configuration alone (sepray's Trainer, the sweep's splits), score it, append a JSON
    # line to benchmarks/results/mir1k_levers.jsonl (the README's levers table)
    python benchmarks/mir1k.py lever --data /path/to/MIR-1K/Wavfile --name NAME [--set KEY=VALUE ...] [--clips 100]

Scoring is `sepray evaluate`'s (`evaluate_songs` with ``bss_eval_v3``): a model at 8 kHz separates each 16 kHz
clip as `sepray separate` does (resampled to 8 kHz and back, the band above 4 kHz to the accompaniment), and its
estimates are scored against the clip's own 16 kHz sources. ``--clips N`` scores a fixed random N of the 825 test
clips (seed 0; 0 = all of them): screening uses 100, the targets all 825. Per singer: the mean vocals NSDR of
the singer's clips; the target is that no test singer's mean is below 0 dB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepray import SOURCES, names
from sepray.config import DataConfig, apply_overrides, resolve
from sepray.data import load_splits
from sepray.evaluate import evaluate_songs

REPO = Path(__file__).resolve().parents[1]
LEVERS = REPO / "benchmarks" / "results" / "mir1k_levers.jsonl"
SCORE_RATE = 16000  # MIR-1K's rate: the papers score there (Park et al. separate at 8 kHz and resample back)
# Published vocals GNSDR / GSIR / GSAR (accompaniment GNSDR where reported) on the standard split
PUBLISHED = {
    "RPCA (Huang et al. 2012)": (3.15, 4.43, 11.09, None),
    "MLRR (Yang 2013)": (3.85, 5.63, 10.70, None),
    "DNN (Huang et al. 2014)": (6.93, 10.99, 10.15, None),
    "DRNN-2 + discrim. (Huang et al. 2015)": (7.45, 13.08, 9.68, None),
    "SH-4stack (Park et al. 2018)": (10.51, 16.01, 12.53, 9.88),
}
# The prototype's fixed part: the lead's first configuration (spec_unet 4 levels / 16 channels / max 64 at 8 kHz)
LEVER_BASE: dict[str, Any] = {
    "data": {"layout": "mir1k", "split": "mir1k-standard", "sample_rate": 8000, "channels": 1},
    "model": {"name": "spec_unet", "n_fft": 512, "hop": 128, "levels": 4, "channels": 16, "max_channels": 64},
    "train": {
        "epochs": 8,
        "steps_per_epoch": 32,
        "batch_size": 8,
        "segment_seconds": 1.0,
        "lr": 2e-3,
        "lr_decay": 1.0,
        "loss": "l1",
        "grad_clip": 1.0,
        "valid_crops": 16,
        "valid_seconds": 2.0,
        "threads": 1,
    },
}


# ----------------------------------------------------------------------------------------------------------
# scoring


def test_clips(data: str, clips: int = 0, channels: int = 1, cache: str | None = None):
    """The standard protocol's test clips at 16 kHz (sorted by name): all 825, or a fixed random ``clips``."""
    cfg = DataConfig(
        path=data, layout="mir1k", split="mir1k-standard", sample_rate=SCORE_RATE, channels=channels,
        cache_dir=cache,
    )  # fmt: skip
    songs = sorted(load_splits(cfg, ("test",))["test"], key=lambda s: s.name)
    if 0 < clips < len(songs):
        pick = np.random.default_rng(0).choice(len(songs), clips, replace=False)
        songs = [songs[i] for i in sorted(pick)]
    return songs


def singer(clip: str) -> str:
    return clip.split("/")[-1].split("_", 1)[0]


def figures(bss: dict[str, Any]) -> dict[str, Any]:
    """A ``bss_eval_v3`` evaluation (evaluate_songs' or a run's ``evaluation/test_sdr.json``) -> the targets'
    figures: G* per source, per-singer mean vocals NSDR, the worst singer."""
    out: dict[str, Any] = {g: dict(bss[g]) for g in names.BSS_GLOBALS}
    per_singer: dict[str, list[float]] = {}
    for clip, scores in bss["songs"].items():
        per_singer.setdefault(singer(clip), []).append(float(scores["vocals"]["nsdr"]))
    out["singers"] = {name: statistics.fmean(v) for name, v in sorted(per_singer.items())}
    worst = min(out["singers"], key=out["singers"].get)
    out.update(worst_singer=worst, worst_singer_nsdr_vocals=out["singers"][worst])
    out["clips"] = len(bss["songs"])
    out["seconds"] = float(sum(bss["seconds"].values()))
    return out


def score_model(model, model_rate: int, songs) -> dict[str, Any]:
    """Separate and score ``songs`` (16 kHz) with ``model`` (at ``model_rate``) -> figures + eval seconds."""
    started = time.perf_counter()
    result = evaluate_songs(model, songs, SCORE_RATE, "cpu", 30.0, names.BSS_EVAL_V3, model_rate=model_rate)
    out = figures(result[names.BSS_EVAL_V3])
    out["eval_seconds"] = time.perf_counter() - started
    out["x_realtime"] = result["x_realtime"]
    return out


def print_figures(fig: dict[str, Any], title: str) -> None:
    print(f"\n{title}: {fig['clips']} test clips ({fig['seconds'] / 60:.1f} min), BSS Eval v3 at 16 kHz, dB")
    print(f"{'':40}{'GNSDR':>8}{'GSIR':>8}{'GSAR':>8}")
    for s in SOURCES:
        print(f"{'  ' + s:40}" + "".join(f"{fig[g][s]:>8.2f}" for g in ("gnsdr", "gsir", "gsar")))
    print("published, vocals (accompaniment GNSDR):")
    for label, (gnsdr, gsir, gsar, acc) in PUBLISHED.items():
        extra = f"   ({acc:.2f})" if acc is not None else ""
        print(f"{'  ' + label:40}{gnsdr:>8.2f}{gsir:>8.2f}{gsar:>8.2f}{extra}")
    singers = "  ".join(f"{k} {v:.2f}" for k, v in fig["singers"].items())
    print(f"mean vocals NSDR per singer: {singers}")
    print(f"worst singer: {fig['worst_singer']} {fig['worst_singer_nsdr_vocals']:.2f} dB (target: >= 0)")
    verdict = "meets" if fig["gnsdr"]["vocals"] >= 7.45 else "misses"
    print(f"vocals GNSDR {fig['gnsdr']['vocals']:.2f} dB {verdict} the laptop target (>= 7.45, DRNN)")


class LoadSampler:
    """The 1-minute load average every ``every`` seconds in a background thread (the machine is shared)."""

    def __init__(self, every: float = 10.0) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self.samples.append(os.getloadavg()[0])
        s = self.samples
        return {"mean": round(statistics.fmean(s), 2), "min": round(min(s), 2), "max": round(max(s), 2)}


# ----------------------------------------------------------------------------------------------------------
# commands


def cmd_lever(args: argparse.Namespace) -> None:
    from sepray.train import Trainer

    raw = apply_overrides(LEVER_BASE, [f"data.path={args.data}", *args.set])
    if args.cache:
        raw["data"]["cache_dir"] = args.cache
    cfg = resolve(raw, "lever")
    torch.set_num_threads(cfg.train.threads or 1)
    load = LoadSampler()
    trainer = Trainer(cfg, device="cpu")
    print(f"{args.name}: {trainer.num_parameters:,} parameters", file=sys.stderr)
    history = []
    cpu_started = time.process_time()
    while not trainer.finished:
        m = {**trainer.train_epoch(), **trainer.validate()}
        history.append(round(m[names.sdr_metric("valid", "vocals")], 3))
        print(
            f"{args.name} epoch {trainer.epoch}: loss {m['train_loss']:.4f} valid vocals {history[-1]:.2f} dB "
            f"{m['steps_per_second']:.2f} steps/s, {trainer.train_seconds:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    cpu_seconds = time.process_time() - cpu_started  # ~ the idle wall time of a one-thread run
    train_load = load.stop()
    if args.save:
        trainer.save_package(Path(args.save) / args.name)
    load = LoadSampler()
    fig = score_model(
        trainer.model.eval(), cfg.data.sample_rate, test_clips(args.data, args.clips, 1, args.cache)
    )
    row = {
        "name": args.name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "set": args.set,
        "config": {k: v for k, v in cfg.flat().items() if not k.startswith("data.path")},
        "params": trainer.num_parameters,
        "steps": trainer.step,
        "train_seconds": round(trainer.train_seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "load_train": train_load,
        "load_eval": load.stop(),
        "valid_sdr_vocals": history,
        **{k: v for k, v in fig.items() if k not in ("singers",)},
        "singers": {k: round(v, 3) for k, v in fig["singers"].items()},
    }
    print_figures(fig, args.name)
    print(
        f"train {row['train_seconds']} s, {row['cpu_seconds']} CPU s ({trainer.step} steps), load {train_load}; "
        f"eval {fig['eval_seconds']:.0f} s"
    )
    append_row(args.out, row)


def append_row(path: str, row: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


def cmd_run(args: argparse.Namespace) -> None:
    from sepray.package import load_package
    from sepray.separate import load_run_model

    torch.set_num_threads(args.threads)
    if (args.run_id is None) == (args.package is None):
        raise SystemExit("give --run-id RUN or --package DIR")
    model, info = load_run_model(args.run_id, "cpu") if args.run_id else load_package(args.package, "cpu")
    if args.wiener is not None:  # spec_unet: Wiener steps at inference only
        model.config = dataclasses.replace(model.config, wiener_iterations=args.wiener)
    load = LoadSampler()
    fig = score_model(model, info.sample_rate, test_clips(args.data, args.clips, 1, args.cache))
    what = args.run_id or args.package
    print_figures(fig, f"{what} ({info.model}, {info.sample_rate} Hz)")
    print(f"evaluation: {fig['eval_seconds']:.0f} s, {fig['x_realtime']:.0f}x real time (separation only)")
    if args.record:
        row = {
            "name": args.record,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "scored": str(what),
        }
        row.update(wiener_at_inference=args.wiener, load_eval=load.stop(), **fig)
        append_row(args.out, row)


def cmd_sweep(args: argparse.Namespace) -> None:
    from sepray import tracking

    work = Path(args.work or tempfile.mkdtemp(prefix="sepray-mir1k-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = args.cache or str(work / "cache")  # empty unless --cache names a filled one
    uri = f"sqlite:///{work / 'mlflow.db'}"
    spec = str(Path(args.spec).resolve())  # the sweep runs in the work folder
    command = [sys.executable, str(REPO / "sweeps" / "run.py"), spec, "--set", f"data.path={args.data}"]
    for item in args.set:
        command += ["--set", item]
    env = {**os.environ, "SEPRAY_CACHE": cache, "MLFLOW_TRACKING_URI": uri, "PYTHONWARNINGS": "ignore"}
    print(f"{' '.join(command)}\n(in {work}, cache {cache}, load now {os.getloadavg()[0]:.1f})", flush=True)
    load = LoadSampler()
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    sweep_load = load.stop()
    (work / "sweep.out").write_text(proc.stdout)
    (work / "sweep.err").write_text(proc.stderr)
    print(proc.stdout[-6000:])
    print(f"exit {proc.returncode}; wall {wall:.0f} s ({wall / 60:.1f} min); load average {sweep_load}")
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        return
    from sepray.sweep.spec import load_spec

    name = load_spec(spec, [f"data.path={args.data}", *args.set]).name
    parent = next(r for r in tracking.find_runs(name, uri=uri) if r.data.tags.get(names.KIND) == "sweep")
    best = parent.data.tags[names.BEST_RUN_ID]
    with tempfile.TemporaryDirectory() as tmp:
        path = tracking.download_artifacts(best, "evaluation/test_sdr.json", tmp, uri)
        evaluation = json.loads(Path(path).read_text())
    fig = figures(evaluation[names.BSS_EVAL_V3])
    print_figures(fig, f"the sweep's winner, run {best}")
    summary = {"wall_seconds": round(wall, 1), "load": sweep_load, "best_run_id": best, **fig}
    (work / "figures.json").write_text(json.dumps(summary, indent=2))
    print(f"figures: {work / 'figures.json'}; MLflow store: {uri}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("sweep", "run", "lever"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True, help="the MIR-1K Wavfile folder (1000 stereo clips)")
        p.add_argument("--cache", help="audio cache folder (default: $SEPRAY_CACHE; sweep: a fresh one)")
        if name != "run":
            p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sweep, run, lever = (sub.choices[n] for n in ("sweep", "run", "lever"))
    sweep.add_argument("--spec", default=str(REPO / "sweeps" / "mir1k.yaml"))
    sweep.add_argument(
        "--work", help="folder for the MLflow store and outputs (default: a new temporary one)"
    )
    run.add_argument("--run-id", help="a logged run's model")
    run.add_argument("--package", help="or a model package folder (config.json + state_dict.pt)")
    run.add_argument("--clips", type=int, default=0, help="a fixed random N of the 825 test clips; 0 = all")
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--wiener", type=int, help="spec_unet: this many Wiener steps at inference instead")
    run.add_argument("--record", metavar="NAME", help="append the figures as a JSON line named NAME to --out")
    run.add_argument("--out", default=str(LEVERS))
    lever.add_argument("--name", required=True)
    lever.add_argument(
        "--clips", type=int, default=100, help="a fixed random N of the 825 test clips; 0 = all"
    )
    lever.add_argument("--out", default=str(LEVERS))
    lever.add_argument("--save", help="also write the trained model package to SAVE/NAME")
    args = ap.parse_args()
    {"sweep": cmd_sweep, "run": cmd_run, "lever": cmd_lever}[args.command](args)


if __name__ == "__main__":
    main()
