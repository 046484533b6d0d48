"""Time sepray.bss_eval.bss_eval_sources against mir_eval.separation.bss_eval_sources (BSS Eval v3, whole clips).

Clips are mono vocals / accompaniment pairs from the built-in song generator (left channel) with estimates that
carry realistic errors (`make_clip`): a time-frequency ratio mask computed from noisy magnitudes (leakage and
musical noise; the two estimates add up to the mixture, as a masking separator's do), for some clips also
band-limiting to 8 kHz and back, a gain error or broadband noise. Three comparisons, each on the same clips,
the two implementations run in turn (A B A B ...) and the median of ``--repeats`` rounds reported:

* fixed order (sepray's default; mir_eval ``compute_permutation=False``): SDR / SIR / SAR;
* permutation (mir_eval's default, the BSS Eval toolbox's): SDR / SIR / SAR of the best matching;
* NSDR: the estimates and the mixture (sepray: one call with ``mixture=``; mir_eval: a second call scoring the
  mixture as every estimate), fixed order.

BLAS runs on one thread for both (``--blas-threads``; sepray's bss_eval always limits its own BLAS to one thread),
so the process CPU time is the work done; the speed-up is the ratio of CPU times, which a busy machine disturbs
far less than wall time (both are printed). Prints the largest |difference| in dB too. Never fails on time.

    python benchmarks/bss_eval_speed.py [--clips 20] [--seconds 8] [--long-seconds 180] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from sepray.bss_eval import bss_eval_sources
from sepray.data.synth import synthesize_song
from sepray.dsp import istft, resample, stft

RATE = 16000
N_FFT, HOP = 1024, 256


def make_clip(seed: int, seconds: float, rate: int = RATE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A mono clip with imperfect estimates -> (references (2, T), estimates (2, T), mixture (T,)), float64;
    source order vocals, accompaniment. The kind of error depends on ``seed`` (see the module docstring)."""
    for attempt in range(20):  # a short song may have no singing: take the next seed's song then
        song = synthesize_song(seed + 10_000 * attempt, seconds, rate)
        if np.sqrt(np.mean(song.vocals[0] ** 2)) > 0.1 * np.sqrt(np.mean(song.accompaniment[0] ** 2)):
            break
    refs = torch.from_numpy(np.stack([song.vocals[0], song.accompaniment[0]]).astype(np.float64))  # (2, T)
    mix = refs.sum(0)  # (T,)
    rng = np.random.default_rng(seed)
    spec = stft(refs, N_FFT, HOP)  # (2, F, frames)
    power = spec.abs() ** 2
    noisy = power * torch.from_numpy(np.exp(rng.normal(0.0, rng.uniform(0.3, 1.5), power.shape)))
    mask = noisy[0] / (noisy[0] + noisy[1] + 1e-12)  # (F, frames): vocals ratio mask from noisy magnitudes
    mix_spec = stft(mix, N_FFT, HOP)
    vocals = istft(mask * mix_spec, N_FFT, HOP, mix.shape[-1])
    ests = torch.stack([vocals, mix - vocals])  # (2, T): they add up to the mixture
    kind = seed % 4
    if kind == 1:  # a separator working at 8 kHz, resampled back (Park et al.'s protocol)
        ests = resample(resample(ests, rate, 8000), 8000, rate)[:, : mix.shape[-1]]
    elif kind == 2:  # gain errors
        ests = ests * torch.from_numpy(rng.uniform(0.5, 1.5, (2, 1)))
    elif kind == 3:  # broadband artifacts
        ests = ests + float(rng.uniform(0.005, 0.05)) * torch.from_numpy(rng.standard_normal(ests.shape))
    return refs.numpy(), ests.numpy(), mix.numpy()


def _mir_eval_nsdr(separation, refs, ests, mix) -> np.ndarray:
    sdr = separation.bss_eval_sources(refs, ests, compute_permutation=False)[0]
    return sdr - separation.bss_eval_sources(refs, np.stack([mix] * len(refs)), compute_permutation=False)[0]


def compare(clips, repeats: int) -> list[tuple[str, dict[str, float], float]]:
    """-> rows (comparison, {"sepray wall", "sepray cpu", "mir_eval wall", "mir_eval cpu"}: median seconds
    over the rounds, max |difference| dB) over all ``clips``."""
    import mir_eval.separation as separation

    cases = {
        "SDR/SIR/SAR, fixed order": (
            lambda r, e, m: _ours(r, e),
            lambda r, e, m: np.concatenate(separation.bss_eval_sources(r, e, compute_permutation=False)[:3]),
        ),
        "SDR/SIR/SAR, permutation (mir_eval's default)": (
            lambda r, e, m: _ours(r, e, permutation=True),
            lambda r, e, m: np.concatenate(separation.bss_eval_sources(r, e)[:3]),
        ),
        "NSDR (estimates + mixture), fixed order": (
            lambda r, e, m: bss_eval_sources(r, e, mixture=m).nsdr,
            lambda r, e, m: _mir_eval_nsdr(separation, r, e, m),
        ),
    }
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval 0.8 marks bss_eval_sources deprecated
        for fn in cases["NSDR (estimates + mixture), fixed order"]:  # warm-up: first allocations, imports
            fn(*clips[0])
        for label, (ours, theirs) in cases.items():
            times: dict[str, list[float]] = {}
            diff = 0.0
            for _ in range(repeats):
                results = {}
                for name, fn in (("sepray", ours), ("mir_eval", theirs)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    results[name] = [fn(r, e, m) for r, e, m in clips]
                    times.setdefault(f"{name} wall", []).append(time.perf_counter() - wall)
                    times.setdefault(f"{name} cpu", []).append(time.process_time() - cpu)
                for a, b in zip(results["sepray"], results["mir_eval"], strict=True):
                    diff = max(diff, float(np.max(np.abs(a - b))))
            rows.append((label, {k: statistics.median(v) for k, v in times.items()}, diff))
    return rows


def _ours(refs, ests, permutation: bool = False) -> np.ndarray:
    scores = bss_eval_sources(refs, ests, permutation=permutation)
    return np.concatenate([scores.sdr, scores.sir, scores.sar])


def _print(title: str, rows) -> None:
    print(title)
    print(
        f"  {'':46s} {'sepray cpu s':>12s} {'mir_eval cpu s':>14s} {'speed-up':>9s}   "
        f"{'sepray wall s':>13s} {'mir_eval wall s':>15s} {'max |diff| dB':>14s}"
    )
    for label, t, diff in rows:
        print(
            f"  {label:46s} {t['sepray cpu']:12.3f} {t['mir_eval cpu']:14.3f} "
            f"{t['mir_eval cpu'] / t['sepray cpu']:8.1f}x   {t['sepray wall']:13.3f} {t['mir_eval wall']:15.3f} "
            f"{diff:14.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20, help="short clips (0: skip them)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each of the --clips clips")
    parser.add_argument("--long-seconds", type=float, default=180.0, help="one long clip (0: skip it)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per comparison (median reported)")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS threads of mir_eval (sepray: 1)")
    args = parser.parse_args()
    threadpool_limits(limits=args.blas_threads, user_api="blas")

    if args.clips > 0:
        clips = [make_clip(seed, args.seconds) for seed in range(args.clips)]
        title = f"{args.clips} clips of {args.seconds:g} s, {RATE} Hz mono, 2 sources (median of {args.repeats} rounds):"
        _print(title, compare(clips, args.repeats))
    if args.long_seconds > 0:
        long_clip = [make_clip(1000, args.long_seconds)]
        _print(f"one clip of {args.long_seconds:g} s, {RATE} Hz mono (1 round):", compare(long_clip, 1))


if __name__ == "__main__":
    main()
