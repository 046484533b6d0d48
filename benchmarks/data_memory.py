"""Memory of concurrent trials on one node: do trials share one copy of the decoded training set?

    python benchmarks/data_memory.py [--gb 2] [--song-seconds 120] [--trials 1 4] [--copy-trials 1 2]

Writes a MUSDB18-HQ-layout data set of generated noise (44.1 kHz stereo, five 16-bit stems per track, sized so
that the training songs' decoded mixture + vocals + accompaniment are ``--gb`` GB of float32, the figure that
is ~25 GB for the real MUSDB18-HQ's 100 training tracks), decodes it into a fresh cache as a sweep's driver does
(``prepare_corpora``), then starts N trial processes at once. Each is a real ``Trainer`` (its data, a small
stft_mask model, Adam) that trains a few steps and then reads every sample of every training song once (as a
long training eventually crops everywhere), and waits; while all N are alive and idle this script reads each one's
/proc/PID/status (VmHWM: peak RSS) and /proc/PID/smaps_rollup (Pss; USS = Private_Clean + Private_Dirty).

Modes: ``mmap`` (today: songs are memory-mapped views of the cache), ``copy`` (songs read into each process's
memory, as before; ``sepray.data.cache.MMAP_MODE = None``), ``none`` (the same process without loading data: what
a trial costs anyway). RSS counts every mapped page a process touched, shared or not, so N processes mapping
one file show N times its size in RSS; PSS splits each shared page among the processes mapping it (their sum is
what the node really spends), USS counts what only that process holds (what one more trial adds).
A configuration that would need more than 70 % of MemAvailable is skipped (this machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SR = 44100
STEMS = ("mixture", "vocals", "drums", "bass", "other")


def meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def proc_kb(path: Path, keys: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = int(value.split()[0]) * 1024
    return out


def write_dataset(root: Path, gb: float, song_seconds: float) -> int:
    """MUSDB18-HQ layout; returns the number of training tracks."""
    import torch

    from sepray.audio import write_audio

    per_song = 3 * 4 * 2 * SR * song_seconds  # mix + vocals + accompaniment, float32, stereo
    songs = max(2, math.ceil(gb * 1e9 / per_song / 0.999))
    g = torch.Generator().manual_seed(0)
    for i in range(songs + 1):  # one more: the test/ track (trials do not load it)
        subset = "test" if i == songs else "train"
        for stem in STEMS:
            x = 0.1 * torch.randn(2, int(song_seconds * SR), generator=g)
            write_audio(
                root / subset / f"track-{i:03d}" / f"{stem}.wav", x.clamp(-1, 1), SR, subtype="PCM_16"
            )
    return songs


def data_config(root: Path, cache: Path):
    from sepray.config import DataConfig

    return DataConfig(path=str(root), cache_dir=str(cache), sample_rate=SR, channels=2)


def run_config(root: Path, cache: Path, steps: int):
    from sepray.config import resolve

    return resolve(
        {
            "data": {"path": str(root), "cache_dir": str(cache), "sample_rate": SR, "channels": 2},
            "model": {"name": "stft_mask"},
            "train": {
                "epochs": 1,
                "steps_per_epoch": steps,
                "batch_size": 4,
                "segment_seconds": 1.0,
                "threads": 1,
                "valid_crops": 4,
                "valid_seconds": 1.0,
            },
        }
    )


def trial(mode: str, root: Path, cache: Path, steps: int) -> None:
    """One trial process: load, train ``steps`` steps, read every sample; say "ready"; wait for stdin."""
    import torch

    from sepray.data import cache as cache_module
    from sepray.train import Trainer

    torch.set_num_threads(1)
    cfg = run_config(root, cache, steps)
    if mode == "none":  # the same trial on one small song made in memory: what a trial costs without the data
        from sepray.data import Song

        g = torch.Generator().manual_seed(0)
        song = Song("small", *[0.1 * torch.randn(2, 10 * SR, generator=g) for _ in range(1)], {})
        song.sources = {s: 0.1 * torch.randn(2, 10 * SR, generator=g) for s in ("vocals", "accompaniment")}
        trainer = Trainer(cfg, splits={"train": [song], "valid": [song]})
    else:
        cache_module.MMAP_MODE = "c" if mode == "mmap" else None
        trainer = Trainer(cfg)
    trainer.train_epoch()
    touched = 0.0
    for song in trainer.splits["train"] + trainer.splits.get("valid", []):
        for x in (song.mix, *song.sources.values()):
            touched += float(x.sum())
    print(f"ready {touched:.3f}", flush=True)
    sys.stdin.read()


def measure(mode: str, k: int, root: Path, cache: Path, steps: int) -> dict:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--trial", mode, "--root", str(root), "--cache", str(cache),
             "--steps", str(steps)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for _ in range(k)
    ]  # fmt: skip
    started = time.perf_counter()
    try:
        for p in procs:
            line = p.stdout.readline()
            if not line.startswith("ready"):
                raise RuntimeError(f"trial process {p.pid} ended before it was ready (exit {p.wait()})")
        rows = []
        for p in procs:
            status = proc_kb(Path(f"/proc/{p.pid}/status"), ("VmHWM", "VmRSS"))
            rollup = proc_kb(
                Path(f"/proc/{p.pid}/smaps_rollup"),
                ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean"),
            )
            rows.append(
                {
                    "peak_rss": status["VmHWM"],
                    "rss": rollup["Rss"],
                    "pss": rollup["Pss"],
                    "uss": rollup["Private_Clean"] + rollup["Private_Dirty"],
                    "shared": rollup["Shared_Clean"],
                }
            )
    finally:
        for p in procs:
            if p.poll() is None:
                p.stdin.close()
        for p in procs:
            p.wait(timeout=120)
    return {"mode": mode, "trials": k, "seconds": time.perf_counter() - started, "procs": rows}


def gb(x: float) -> str:
    return f"{x / 1e9:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="decoded training data (mix + 2 sources), GB")
    ap.add_argument("--song-seconds", type=float, default=120.0)
    ap.add_argument("--trials", type=int, nargs="+", default=[1, 4], help="concurrent trials, memory-mapped")
    ap.add_argument("--copy-trials", type=int, nargs="*", default=[1, 2], help="the same, songs copied in")
    ap.add_argument("--steps", type=int, default=5, help="training steps per trial before reading everything")
    ap.add_argument("--work", help="folder for the data set and cache (default: a temporary one, removed)")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--trial", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trial:
        trial(args.trial, Path(args.root), Path(args.cache), args.steps)
        return

    from sepray.data import load_splits, prepare_corpora

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="sepray-data-memory-"))
    root, cache = work / "musdb", work / "cache"
    try:
        started = time.perf_counter()
        if not (root / "train").is_dir():
            write_dataset(root, args.gb, args.song_seconds)
        written = time.perf_counter() - started
        started = time.perf_counter()
        prepare_corpora(data_config(root, cache))
        prepared = time.perf_counter() - started
        splits = load_splits(data_config(root, cache), ("train", "valid"))
        songs = splits["train"] + splits["valid"]
        data_bytes = sum(4 * (1 + len(s.sources)) * s.mix.numel() for s in songs)
        del splits, songs
        cache_bytes = sum(f.stat().st_size for f in cache.rglob("*.npy"))
        print(
            f"data set: {work} ({written:.0f} s to write), decoded training data {gb(data_bytes)} GB "
            f"(mix + vocals + accompaniment, float32, 44.1 kHz stereo), cache {gb(cache_bytes)} GB "
            f"({prepared:.0f} s to decode)"
        )
        counts = sorted(set(args.trials) | set(args.copy_trials))
        plan = [("none", k) for k in counts] + [("mmap", k) for k in args.trials]
        plan += [("copy", k) for k in args.copy_trials]
        results = []
        for mode, k in plan:
            need = k * data_bytes if mode == "copy" else data_bytes
            if need > 0.7 * meminfo("MemAvailable"):
                print(
                    f"skipped {mode} x {k}: needs ~{gb(need)} GB, {gb(meminfo('MemAvailable'))} GB available"
                )
                continue
            results.append(measure(mode, k, root, cache, args.steps))
            print(f"  measured {mode} x {k} ({results[-1]['seconds']:.0f} s)", flush=True)
        report(results, data_bytes)
        if args.json:
            Path(args.json).write_text(json.dumps({"data_bytes": data_bytes, "results": results}, indent=1))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def report(results: list[dict], data_bytes: int) -> None:
    def total(r, key):
        return sum(p[key] for p in r["procs"])

    print(f"\n{'mode':<6}{'trials':>7}{'peak RSS/trial':>16}{'PSS/trial':>11}{'USS/trial':>11}"
          f"{'sum RSS':>9}{'sum PSS':>9}   (GB)")  # fmt: skip
    for r in results:
        k = r["trials"]
        print(
            f"{r['mode']:<6}{k:>7}{gb(total(r, 'peak_rss') / k):>16}{gb(total(r, 'pss') / k):>11}"
            f"{gb(total(r, 'uss') / k):>11}{gb(total(r, 'rss')):>9}{gb(total(r, 'pss')):>9}"
        )
    runs = {(r["mode"], r["trials"]): r for r in results}
    print(f"\nper extra trial, over the same trials without data (data: {gb(data_bytes)} GB):")
    for mode in ("mmap", "copy"):
        ks = sorted(k for m, k in runs if m == mode and ("none", k) in runs)
        if len(ks) < 2:
            continue
        lo, hi = ks[0], ks[-1]
        for key, label in (("pss", "sum of PSS (what the node spends)"), ("rss", "sum of RSS")):

            def data_part(k, key=key, mode=mode):
                return total(runs[(mode, k)], key) - total(runs[("none", k)], key)

            growth = (data_part(hi) - data_part(lo)) / (hi - lo)
            print(
                f"  {mode}, {label}, {lo} -> {hi} trials: {gb(data_part(lo))} -> {gb(data_part(hi))} GB, "
                f"+{gb(growth)} GB per extra trial = {100 * growth / data_bytes:.1f} % of the data"
            )


if __name__ == "__main__":
    main()
