"""What the sweep platform costs on top of training: run a sweep (default: the quickstart) and print

* wall time of the whole command, and the share of the machine's CPU time that was busy (from /proc/stat,
  sampled every second while the sweep runs);
* trial start latency: for each trial, the time from the end of the previous trial on the same slot (or from
  the driver's start, for the first ones) to the moment its trainable started (Ray's first report time minus
  its ``time_this_iter_s``); this holds Ray scheduling, worker start, data loading and model building;
* time per report: per trial, (its wall span - the training seconds it logged) / epochs, i.e. validation,
  checkpointing and MLflow logging per epoch.

Run in a scratch folder (it writes mlflow.db and ray_results there); never fails on time:

    python benchmarks/sweep_overhead.py [SPEC] [--smoke-test] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sepray import names

REPO = Path(__file__).resolve().parents[1]


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def trial_spans(experiment: Path) -> list[dict]:
    """Per trial: start of its trainable, its last report, epochs and the training seconds it logged."""
    spans = []
    for result in experiment.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        first, last = rows[0], rows[-1]
        spans.append(
            {
                "trial": last.get("trial_id"),
                "start": first["timestamp"] - first.get("time_this_iter_s", 0.0),
                "end": last["timestamp"],
                "epochs": len(rows),
                "train_seconds": float(last.get(names.TRAIN_SECONDS_METRIC) or 0.0),
                "reused": bool(last.get(names.RESULT_REUSED)),
            }
        )
    return sorted(spans, key=lambda s: s["start"])


def start_latencies(spans: list[dict], started: float, slots: int) -> list[float]:
    """Gap before each trial on a greedy assignment of trials to ``slots`` concurrent slots."""
    free = [started] * slots
    gaps = []
    for span in spans:
        slot = min(range(slots), key=lambda i: free[i])
        gaps.append(max(0.0, span["start"] - free[slot]))
        free[slot] = span["end"]
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=str(REPO / "sweeps" / "quickstart.yaml"))
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--workdir", help="scratch folder (default: a new temporary one)")
    parser.add_argument("--slots", type=int, default=2, help="trials run at once (the spec's max_concurrent)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sepray-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO / "sweeps" / "run.py"), str(Path(args.spec).resolve())]
    command += ["--smoke-test"] if args.smoke_test else []
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    samples: list[tuple[int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(cpu_times())
            done.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.time()
    sampler.start()
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    wall = time.time() - started
    done.set()
    sampler.join()
    samples.append(cpu_times())
    leaderboard = [line for line in proc.stdout.splitlines() if line.strip()]
    print("\n".join(leaderboard[-16:]))
    print(f"\nexit status {proc.returncode}; wall {wall:.1f} s; work folder {work}")
    (busy0, total0), (busy1, total1) = samples[0], samples[-1]
    print(
        f"CPU busy while the sweep ran: {100 * (busy1 - busy0) / max(1, total1 - total0):.1f} % of all cores"
    )
    name = next((p for p in (work / "ray_results").iterdir() if p.is_dir()), None)
    spans = trial_spans(name) if name else []
    trained = [s for s in spans if not s["reused"]]
    if not trained:
        print("no trial results found")
        return
    gaps = start_latencies(spans, started, args.slots)
    per_report = [(s["end"] - s["start"] - s["train_seconds"]) / s["epochs"] for s in trained]
    print(
        f"trials: {len(spans)}; start latency median {statistics.median(gaps):.1f} s, max {max(gaps):.1f} s; "
        f"time per report (validation + checkpoint + MLflow) median {statistics.median(per_report):.2f} s, "
        f"max {max(per_report):.2f} s; training share of trial time "
        f"{100 * sum(s['train_seconds'] for s in trained) / sum(s['end'] - s['start'] for s in trained):.0f} %"
    )


if __name__ == "__main__":
    main()
