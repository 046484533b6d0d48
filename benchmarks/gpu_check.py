"""One command that checks sepray's GPU path on a machine with CUDA and prints one table.

    python benchmarks/gpu_check.py [--skip tests,sweep,amp,generation] [--quick] [--json results.json]

Checks, in this order (sized for 10 minutes on one GPU; ``--budget`` seconds, default 570, bound the whole run: a
check is started only while time is left, and the tests and the sweep are stopped when it runs out):

* ``tests``: the CUDA tests (``pytest -m gpu``): AMP training and checkpoint resume on the GPU, GPU inference
  against the CPU, the multi-GPU (DataParallel) trial when 2 or more GPUs are visible, the CUDA-graph
  generation step against eager and naive generation.
* ``sweep``: a real smoke sweep with ``resources.gpu: auto`` (``sweeps/quickstart.yaml --smoke-test`` on a fresh
  local Ray instance and a temporary MLflow store): the driver's choice line, and every trial's
  ``CUDA_VISIBLE_DEVICES`` and training device as its MLflow run recorded them.
* ``amp``: training steps/s with AMP on and off (a Wave-U-Net of unet.yaml's size, a WaveNet of wavenet.yaml's,
  a quickstart spec_unet), the share of step time spent waiting on data, and the GPU utilisation while training
  (``nvidia-smi``, sampled every 0.25 s); and for a MUSDB-like case (44.1 kHz stereo, pitch shift) the data wait
  with batches drawn in the step against drawn ahead (``train.prefetch_batches`` 0 / 2).
* ``generation``: the UMT decoder's cached generation on CUDA (4 x 10 layers, 128 channels), samples/s with the
  CUDA graph on and off, batch 1 and 8, and whether both give the same samples.

Without CUDA it prints one line and exits 2. Exit status 1 when a check failed or was not run, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # data_wait.py: the training measurement this check shares
CHECKS = ("tests", "sweep", "amp", "generation")
SMOKE_SPEC = REPO / "sweeps" / "quickstart.yaml"
SMOKE_NAME = "quickstart-smoke"


@dataclass(frozen=True)
class Row:
    check: str
    status: str  # ok | FAILED | not run
    figures: str


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"gpu_check: error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--skip", default="", help=f"comma-separated checks to leave out, of {','.join(CHECKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and samples (about 2 minutes)")
    parser.add_argument("--json", type=Path, help="also write the table's rows and raw figures here")
    parser.add_argument("--budget", type=float, default=570.0, help="seconds for the whole run (default 570)")
    args = parser.parse_args(argv)
    skip = [s for s in args.skip.split(",") if s]
    unknown = [s for s in skip if s not in CHECKS]
    if unknown:
        parser.error(f"--skip {unknown[0]}: unknown check; expected some of {','.join(CHECKS)}")
    args.checks = [c for c in CHECKS if c not in skip]
    if not args.budget > 0:
        parser.error(f"--budget {args.budget:g}: expected a number of seconds > 0")
    args.steps = 10 if args.quick else 40
    args.samples = 300 if args.quick else 2000
    return args


def no_cuda_reason() -> str | None:
    """None when CUDA is usable, else the one line saying why nothing can be checked."""
    import torch

    if torch.cuda.is_available():
        return None
    build = torch.version.cuda or "none (a CPU build)"
    return (
        f"gpu_check: CUDA is not available on this machine (torch {torch.__version__}, CUDA build {build}, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): nothing checked"
    )


def format_table(rows: list[Row]) -> str:
    head = Row("check", "status", "figures")
    widths = [max(len(getattr(r, f)) for r in [head, *rows]) for f in ("check", "status")]
    lines = [f"{r.check:<{widths[0]}}  {r.status:<{widths[1]}}  {r.figures}" for r in [head, *rows]]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def run_checks(
    names: list[str], checks: dict[str, Callable[[float], list[Row]]], budget: float = float("inf")
) -> list[Row]:
    """Each check's rows (a check gets the seconds left of ``budget``); a check that raises is one FAILED row with
    the error's first line, and the rest go on; a check not started before the budget ran out is a "not run" row."""
    rows: list[Row] = []
    deadline = time.perf_counter() + budget
    for name in names:
        start = time.perf_counter()
        if start >= deadline:
            rows.append(Row(name, "not run", f"the {budget:.0f} s budget was spent"))
            continue
        try:
            rows.extend(checks[name](deadline - start))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            rows.append(Row(name, "FAILED", f"{type(exc).__name__}: {first}"[:300]))
        print(f"gpu_check: {name} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def pytest_counts(output: str) -> dict[str, int]:
    """``{"passed": 5, "skipped": 1, ...}`` from pytest's last summary line."""
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    found = re.findall(
        r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", summary[-1] if summary else ""
    )
    return {("error" if kind.startswith("error") else kind): int(n) for n, kind in found}


# ----------------------------------------------------------------------------------------------------------
# the checks (CUDA)


def run_bounded(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a session of its own: past ``timeout`` the whole process group is killed (a sweep's
    Ray processes too, which would otherwise keep the GPU), then TimeoutExpired is raised."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def check_tests(timeout: float = 240) -> list[Row]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-m", "gpu", "tests"]
    start = time.perf_counter()
    proc = run_bounded(cmd, timeout, cwd=REPO)
    counts = pytest_counts(proc.stdout)
    ok = proc.returncode == 0 and counts.get("passed", 0) > 0
    figures = ", ".join(f"{n} {k}" for k, n in counts.items() if k != "deselected")
    skipped = [line.split(" - ", 1)[-1] for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    detail = "; ".join(failed[:3] or skipped[:2])
    return [
        Row(
            "tests",
            "ok" if ok else "FAILED",
            f"{figures} in {time.perf_counter() - start:.0f} s{'; ' + detail if detail else ''}",
        )
    ]


def check_sweep(timeout: float = 300) -> list[Row]:
    from sepray import names, tracking

    work = Path(tempfile.mkdtemp(prefix="sepray-gpu-check-"))
    try:
        uri = f"sqlite:///{work / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
        start = time.perf_counter()
        proc = run_bounded(
            [sys.executable, str(REPO / "sweeps" / "run.py"), str(SMOKE_SPEC), "--smoke-test"],
            timeout,
            cwd=work,
            env=env,
        )
        wall = time.perf_counter() - start
        choice = next(
            (line for line in proc.stdout.splitlines() if line.startswith("resources.gpu auto:")), ""
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1]
            return [Row("sweep", "FAILED", f"exit {proc.returncode} after {wall:.0f} s: {last[:200]}")]
        parent = tracking.find_runs(SMOKE_NAME, f"tags.`{names.KIND}` = 'sweep'", uri)[0]
        children = tracking.child_runs(SMOKE_NAME, parent.info.run_id, uri)
        seen = sorted(
            {
                (c.data.tags.get(names.CUDA_VISIBLE_DEVICES, "?"), c.data.tags.get(names.TRAIN_DEVICE, "?"))
                for c in children
            }
        )
        on_gpu = bool(children) and all(dev.startswith("cuda") for _, dev in seen)
        trials = ", ".join(f"CUDA_VISIBLE_DEVICES={v!r} -> {d}" for v, d in seen)
        figures = f"exit 0 in {wall:.0f} s; {choice.split(': ', 1)[-1]}; {len(children)} trial runs: {trials}"
        return [Row("sweep", "ok" if on_gpu else "FAILED", figures)]
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Utilisation:
    """GPU utilisation (%) sampled by ``nvidia-smi`` every ``period`` s while the block runs; ``mean`` or None."""

    def __init__(self, index: int = 0, period: float = 0.25):
        self.index, self.period = index, period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float | None:
        cmd = [
            "nvidia-smi",
            f"--id={self.index}",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
        ]
        try:
            return float(subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip())
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def amp_cases() -> dict[str, object]:
    """name -> RunConfig: the shipped specs' GPU-sized configurations, on a small synthetic corpus."""
    from data_wait import case_config

    from sepray.sweep.spec import load_spec

    def spec_trial(spec: str, sampled: dict):
        cfg = load_spec(REPO / "sweeps" / spec).resolve_trial(sampled)
        return replace(cfg, data=replace(cfg.data, synth_songs=6, synth_seconds=10.0))

    return {
        "waveunet 6 levels x 24, 16 kHz, 8 x 1 s": spec_trial(
            "unet.yaml",
            {"model.levels": 6, "model.channels": 24, "model.down_kernel": 15, "model.up_kernel": 5},
        ),
        "wavenet 3 x 9, 64/128, mu-law, 16 kHz, 4 x 0.5 s": spec_trial(
            "wavenet.yaml",
            {
                "model.blocks": 3,
                "model.layers_per_block": 9,
                "model.residual_channels": 64,
                "model.skip_channels": 128,
                "model.input": "mulaw",
                "model.head": "mulaw",
            },
        ),
        "spec_unet quickstart 3 levels x 12, 8 kHz, 8 x 1 s": case_config("quickstart", None),
        "musdb-like waveunet 44.1 kHz stereo, pitch shift": case_config("musdb-like", None),
    }


def check_amp(steps: int, figures: dict) -> list[Row]:
    import torch
    from data_wait import measure

    from sepray import names

    speed, wait = names.STEPS_PER_SECOND, names.DATA_WAIT_SHARE
    rows = []
    for name, cfg in amp_cases().items():
        util = Utilisation(torch.cuda.current_device())
        on = measure(cfg, 2, steps, "cuda", amp=True, around=lambda u=util: u)  # sampled while it trains
        off = measure(cfg, 2, steps, "cuda", amp=False)
        text = (
            f"AMP {on[speed]:.1f} steps/s, fp32 {off[speed]:.1f} "
            f"({on[speed] / off[speed]:.2f}x); data wait {100 * on[wait]:.1f} %"
        )
        result = {"amp": on, "fp32": off, "gpu_utilisation": util.mean}
        if name.startswith("musdb"):
            in_step = measure(cfg, 0, steps, "cuda", amp=True)
            result["prefetch_0"] = in_step
            text += (
                f" (drawn in the step: {100 * in_step[wait]:.1f} %, "
                f"{in_step[speed]:.1f} steps/s; one batch {in_step['draw_ms']:.0f} ms)"
            )
        text += f"; GPU busy {util.mean:.0f} %" if util.mean is not None else "; GPU busy n/a (no nvidia-smi)"
        figures[f"amp {name}"] = result
        finite = all(r[names.TRAIN_LOSS] == r[names.TRAIN_LOSS] for r in (on, off))
        rows.append(Row(f"amp {name}", "ok" if finite else "FAILED", text))
    return rows


def check_generation(samples: int, figures: dict) -> list[Row]:
    import torch

    from sepray.models.generation import cached_generate
    from sepray.models.umt_decoder import CausalWaveNetDecoder

    torch.manual_seed(0)
    decoder = CausalWaveNetDecoder(outputs=1, cond_channels=64).eval().cuda()
    rows = []
    for batch in (1, 8):
        cond = torch.randn(batch, 64, samples, device="cuda")
        speeds, outputs = {}, {}
        for graph in (True, False):
            cached_generate(decoder, cond[..., :64], cuda_graph=graph)  # warm-up (capture, cuBLAS)
            torch.cuda.synchronize()
            start = time.perf_counter()
            outputs[graph] = cached_generate(decoder, cond, cuda_graph=graph)
            torch.cuda.synchronize()
            speeds[graph] = batch * samples / (time.perf_counter() - start)
        same = torch.equal(outputs[True], outputs[False])
        figures[f"generation batch {batch}"] = {
            "graph": speeds[True],
            "eager": speeds[False],
            "identical": same,
        }
        text = (
            f"CUDA graph {speeds[True]:,.0f} samples/s, eager {speeds[False]:,.0f} "
            f"({speeds[True] / speeds[False]:.1f}x); identical samples: {same}"
        )
        rows.append(Row(f"generation batch {batch}", "ok" if same else "FAILED", text))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = no_cuda_reason()
    if reason is not None:
        print(reason)
        return 2
    import torch

    figures: dict = {}
    checks = {
        "tests": lambda left: check_tests(min(240.0, left)),
        "sweep": lambda left: check_sweep(min(300.0, left)),
        "amp": lambda left: check_amp(args.steps, figures),
        "generation": lambda left: check_generation(args.samples, figures),
    }
    start = time.perf_counter()
    rows = run_checks(args.checks, checks, args.budget)
    name = torch.cuda.get_device_name()
    print(f"\nsepray GPU check on {torch.cuda.device_count()} x {name}, torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}), {time.perf_counter() - start:.0f} s")  # fmt: skip
    print(format_table(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"device": name, "rows": [asdict(r) for r in rows], "figures": figures}, indent=2)
        )
    return 1 if any(r.status != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
