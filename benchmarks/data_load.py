"""Load time of a dataset through sepray's audio cache: the first load (decode, resample, write the cache) and
the second (a new process's load: the cache read back), at each sample rate.

    python benchmarks/data_load.py /path/to/MIR-1K/Wavfile [--rates 8000 16000] [--channels 1] [--split auto]

Every song of every split is loaded (``load_splits``). The cache is a fresh temporary folder (removed at the
end) unless ``--cache DIR`` is given; the second load clears the in-process song memo first, as a new process
would start without it (the operating system's file cache stays warm, as it would for a second run).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from sepray.config import DataConfig
from sepray.data import clear_memo, load_splits


def folder_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="dataset root (any layout sepray reads)")
    ap.add_argument("--rates", type=int, nargs="+", default=[8000, 16000])
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--split", default="auto", help="data.split (auto, mir1k-standard, a split file)")
    ap.add_argument("--cache", help="cache folder (default: a fresh temporary one, removed afterwards)")
    args = ap.parse_args()
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="sepray-bench-cache-"))
    print(f"{args.path}: channels {args.channels}, split {args.split}, cache {cache}")
    print(f"{'rate':>6}{'songs':>7}{'audio min':>11}{'first s':>9}{'second s':>10}{'cache MB':>10}")
    try:
        for rate in args.rates:
            cfg = DataConfig(
                path=args.path,
                split=args.split,
                sample_rate=rate,
                channels=args.channels,
                cache_dir=str(cache),
            )
            times = []
            for _ in range(2):
                clear_memo()
                start = time.perf_counter()
                splits = load_splits(cfg)
                times.append(time.perf_counter() - start)
            songs = [s for v in splits.values() for s in v]
            minutes = sum(s.length for s in songs) / rate / 60
            print(
                f"{rate:>6}{len(songs):>7}{minutes:>11.1f}{times[0]:>9.1f}{times[1]:>10.2f}"
                f"{folder_megabytes(cache / 'audio'):>10.0f}"
            )
            del splits, songs
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
