"""Print how long the synthetic corpus generator takes: N songs of S seconds, in memory and on disk.

    python benchmarks/synth_speed.py --songs 16 --seconds 20

CPU time is the figure to compare (wall time also counts other processes sharing the machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from sepray.data.synth import song_seed, synthesize_song, write_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="also time write_corpus into a temporary folder")
    args = parser.parse_args()

    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(args.songs):
        synthesize_song(song_seed(args.seed, index), args.seconds, args.sample_rate)
    _report("synthesize_song", args, time.perf_counter() - wall, time.process_time() - cpu)

    if args.write:
        with tempfile.TemporaryDirectory() as out_dir:
            wall, cpu = time.perf_counter(), time.process_time()
            write_corpus(out_dir, args.songs, args.seconds, args.seed, args.sample_rate)
            _report("write_corpus", args, time.perf_counter() - wall, time.process_time() - cpu)


def _report(what: str, args: argparse.Namespace, wall: float, cpu: float) -> None:
    audio = args.songs * args.seconds
    print(
        f"{what}: {args.songs} songs x {args.seconds:g} s at {args.sample_rate} Hz: "
        f"{wall:.2f} s wall, {cpu:.2f} s CPU ({cpu / args.songs:.3f} s CPU per song, "
        f"{audio / max(cpu, 1e-9):.0f}x real time)"
    )


if __name__ == "__main__":
    main()
