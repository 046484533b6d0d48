"""Peak memory and speed of one separation call for each model family, preset size and paper size.

Each configuration runs in a fresh interpreter (so one peak does not hide another): build the model with
random weights, warm up on a short input, then one ``decode(model(x))`` call (no gradients) producing
``--seconds`` of mono output. Printed per configuration: parameters, peak RSS growth over the warmed-up
process (CPU), the tensor-level estimate that ``sepray separate`` budgets with
(:func:`sepray.chunk_budget.call_peak_bytes`), wall time and x real time; on CUDA the peak of
``torch.cuda.max_memory_allocated``. Prints figures only, never passes or fails.

    python benchmarks/separate_memory.py [--seconds 4] [--threads 2] [--only wavenet-paper]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# label -> (registry name, config overrides, sample rate)
CONFIGS = {
    "wavenet-small (preset)": ("wavenet-small", None, None),
    "wavenet paper (5x9, 128/512)": ("wavenet", {}, 16000),
    "waveunet-small (preset)": ("waveunet-small", None, None),
    "waveunet paper (12 levels, 24)": ("waveunet", {}, 22050),
    "stft_mask (separate_speed size)": ("stft_mask", {"n_fft": 256, "hop": 64}, 8000),
    "stft_mask paper (1024 / 512)": ("stft_mask", {}, 44100),
}

PROBE = """
import json, resource, sys, time
import torch
from sepray.chunk_budget import call_peak_bytes
from sepray.config import load_config
from sepray.models import build_model

name, overrides, rate, seconds, threads, device = json.loads(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)
if overrides is None:  # a preset
    cfg = load_config(name)
    name, overrides, rate = cfg.model_name, cfg.model, cfg.data.sample_rate
model = build_model(name, overrides).eval().to(device)
n_out = round(seconds * rate)
x = torch.rand(1, model.audio_channels, model.input_length(n_out), device=device) - 0.5
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with torch.no_grad():
    model.decode(model(x[..., : model.input_length(model.step)]))  # warm up
    if device == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base, start = rss(), time.perf_counter()
    y = model.decode(model(x)).float().cpu()
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else rss() - base
del y
estimate = call_peak_bytes(model, n_out, device)
print(json.dumps(dict(
    rate=rate, params=sum(p.numel() for p in model.parameters()), peak=peak, estimate=estimate,
    wall=wall, seconds=model.output_length(x.shape[-1]) / rate,
)))
"""


def measure(spec: tuple, seconds: float, threads: int, device: str) -> dict:
    name, overrides, rate = spec
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([name, overrides, rate, seconds, threads, device])],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="output seconds of the measured call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="run only the configurations whose label contains this text")
    args = ap.parse_args()
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print("GPU: skipped (CUDA is not available on this machine)")
    print(f"one call, {args.seconds:g} s of mono output, {args.threads} threads, random weights")
    head = f"{'model':<34}{'device':>7}{'rate':>7}{'params':>12}{'peak MB':>9}{'est. MB':>9}"
    print(head + f"{'MB/s':>7}{'wall s':>8}{'x real time':>13}")
    for label, spec in CONFIGS.items():
        if args.only and args.only not in label:
            continue
        for device in devices:
            r = measure(spec, args.seconds, args.threads, device)
            row = f"{label:<34}{device:>7}{r['rate']:>7}{r['params']:>12,}{r['peak'] / 1e6:>9.0f}"
            row += f"{r['estimate'] / 1e6:>9.0f}{r['peak'] / 1e6 / r['seconds']:>7.0f}"
            print(row + f"{r['wall']:>8.2f}{r['seconds'] / r['wall']:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
