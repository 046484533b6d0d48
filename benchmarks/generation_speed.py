"""Autoregressive generation speed: naive (full decoder pass per sample) vs cached (per-layer queues).

Decoder: the UMT default, 4 x 10 gated causal layers (dilations 1 .. 512), 128 residual / 128 skip channels,
256-way mu-law softmax, 64 latent channels; random weights and a random conditioning signal. Speeds are
generated samples per second summed over the batch. Two regimes for the naive generator:

* ``growing``: the first samples from silence, where the naive window is still short (favours naive);
* ``full``: after a prompt as long as the receptive field (8,186 samples, half a second at 16 kHz), the steady
  state of any longer generation: every naive sample re-runs the decoder over the whole receptive field.

The cached generator's cost per sample does not depend on the window. Each regime also checks that both
generators return identical samples (argmax) on the overlapping prefix; seeded sampling is checked in float64
(in float32 a draw within rounding of a class boundary can flip one sample). The last line is the
steady-state (full window) speedup at batch 1 on CPU. On CUDA the cached step is a replayed CUDA graph.

    python benchmarks/generation_speed.py [--threads 1] [--batch 8] [--naive-samples 100]
        [--batched-naive-samples 40] [--cached-samples 300] [--full-samples 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from sepray.models.generation import cached_generate, naive_generate
from sepray.models.umt_decoder import CausalWaveNetDecoder


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def generator(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def growing(
    decoder, device: str, batch: int, naive_samples: int, cached_samples: int
) -> tuple[float, float, bool]:
    """Samples/s of naive and cached from silence (argmax), and whether they agree on the first naive_samples."""
    cond = torch.randn(batch, 64, cached_samples, device=device, generator=generator(device, 1))
    naive, t_naive = timed(lambda: naive_generate(decoder, cond[..., :naive_samples]))
    cached, t_cached = timed(lambda: cached_generate(decoder, cond))
    same = torch.equal(naive, cached[..., :naive_samples])
    return batch * naive_samples / t_naive, batch * cached_samples / t_cached, same


def full_window(decoder, device: str, samples: int) -> tuple[float, bool]:
    """Batch 1: samples/s of naive with a full receptive-field window (argmax), and agreement with cached from
    the same prompt."""
    field = decoder.receptive_field
    cond = torch.randn(1, 64, field + samples, device=device, generator=generator(device, 3))
    prompt = torch.randint(0, 256, (1, 1, field), device=device, generator=generator(device, 4))
    naive, t_naive = timed(lambda: naive_generate(decoder, cond, prompt=prompt))
    return samples / t_naive, torch.equal(naive, cached_generate(decoder, cond, prompt=prompt))


def sampling_agrees(decoder, device: str, batch: int, samples: int) -> bool:
    """Seeded sampling, float64 (in float32 a draw within rounding of a class boundary can flip a sample)."""
    decoder = copy.deepcopy(decoder).double()
    cond = torch.randn(batch, 64, samples, device=device, generator=generator(device, 6), dtype=torch.float64)
    naive = naive_generate(decoder, cond, "sample", 0.9, generator(device, 7))
    return torch.equal(naive, cached_generate(decoder, cond, "sample", 0.9, generator(device, 7)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1: stable on a shared machine)"
    )
    parser.add_argument("--batch", type=int, default=8, help="the batched case's batch size")
    parser.add_argument("--naive-samples", type=int, default=100, help="naive samples from silence, batch 1")
    parser.add_argument(
        "--batched-naive-samples", type=int, default=40, help="naive samples from silence, batched"
    )
    parser.add_argument("--cached-samples", type=int, default=300, help="cached samples per timing")
    parser.add_argument(
        "--full-samples", type=int, default=2, help="naive samples with a full window (batch 1)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    decoder = CausalWaveNetDecoder(outputs=1, cond_channels=64).eval()
    print(f"decoder: 4 x 10 layers, receptive field {decoder.receptive_field} samples, "
          f"{sum(p.numel() for p in decoder.parameters()):,} parameters; CPU threads {args.threads}")  # fmt: skip
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    else:
        print("GPU: not measured (torch.cuda.is_available() is False on this machine)")
    speedup, identical = None, True
    for device in devices:
        decoder = decoder.to(device)
        for batch in (1, args.batch):
            count = args.naive_samples if batch == 1 else args.batched_naive_samples
            naive, cached, same = growing(decoder, device, batch, count, args.cached_samples)
            identical &= same
            print(f"{device:4s} batch {batch}: growing window (first {count} samples, argmax): naive {naive:.2f}, "
                  f"cached {cached:.1f} samples/s, speedup {cached / naive:.1f}x, identical {same}")  # fmt: skip
            if batch == 1:
                full, same = full_window(decoder, device, args.full_samples)
                identical &= same
                print(f"{device:4s} batch 1: full window ({decoder.receptive_field} samples, {args.full_samples} "
                      f"samples, argmax): naive {full:.3f}, cached {cached:.1f} samples/s, "
                      f"speedup {cached / full:.0f}x, identical {same}")  # fmt: skip
                if device == "cpu":
                    speedup = cached / full
        same = sampling_agrees(decoder, device, args.batch, args.batched_naive_samples)
        identical &= same
        print(f"{device:4s} batch {args.batch}: seeded sampling (temperature 0.9, float64, "
              f"{args.batched_naive_samples} samples): identical {same}")  # fmt: skip
    print(f"cached/naive speedup: {speedup:.0f}x (identical: {identical})")


if __name__ == "__main__":
    main()
