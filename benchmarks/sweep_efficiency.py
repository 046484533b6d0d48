"""How much training a search strategy needs to find a good separator: the exhaustive grid vs random search +
ASHA vs Optuna TPE + ASHA, on the synthetic corpus and one small discrete space (quickstart's Wave-U-Net at
8 kHz; the full space is 3 levels x 2 channel counts x 3 learning rates = 18 configurations).

Every strategy is a real sweep (``sweeps/run.py`` on a fresh local Ray instance, trials logged to one MLflow
sqlite store in the work folder); random search and TPE sample the same discrete values the grid enumerates.
The grid trains every configuration to the full budget without a scheduler; random and TPE run a fixed number
of Ray trials (a configuration drawn twice is trained once: the sweep reuses its results) under ASHA. All
finished trials are evaluated on the full test songs (``top_k`` covers them all).

For each sweep the trials are taken in the order their MLflow runs ended; after each one the curve records
the cumulative trial-steps (optimizer steps trained: epochs logged x steps per epoch, summed over the
configurations; an ASHA-stopped trial counts what it trained) and the test SDR (vocals) of the trial the
strategy would pick at that point: the finished trial with the best validation metric so far (the metric ASHA
and the searcher see; the sweep only ever picks among finished trials). Printed: a table per sweep and the
median over seeds, the curve as a PNG and the raw curves as JSON. The target the issue set: within 0.5 dB of
the grid's pick with at most 35 % of its trial-steps. Never fails on time.

    python benchmarks/sweep_efficiency.py [--quick] [--seeds N] [--trials N] [--workdir DIR] [--out PNG]
    python benchmarks/sweep_efficiency.py --from-json RUN.json [--out PNG]   # print and draw a saved run again

The full run (2 seeds) took 30 min on the 2 shared cores here, 17 min of it the grid; ``--quick`` about 5 min.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sepray import names

REPO = Path(__file__).resolve().parents[1]
BASE_SPEC = REPO / "sweeps" / "quickstart.yaml"
TARGET_GAP_DB = 0.5  # the target: within 0.5 dB of the grid's pick ...
TARGET_SHARE = 0.35  # ... with at most 35 % of its trial-steps

SIZES = {
    "full": {
        "params": {
            "model.levels": {"choice": [2, 3, 4]},
            "model.channels": {"choice": [8, 12]},
            "train.lr": {"choice": [3.0e-4, 1.0e-3, 3.0e-3]},
        },
        "epochs": 8,
        "steps_per_epoch": 16,
        "trials": 12,  # Ray trials of random / TPE (of 18 grid points; duplicates are not trained again)
        "startup_trials": 4,  # TPE: random trials before its model kicks in
        "seeds": 2,
    },
    "quick": {
        "params": {
            "model.levels": {"choice": [2, 3]},
            "model.channels": {"choice": [8]},
            "train.lr": {"choice": [1.0e-3, 3.0e-3]},
        },
        "epochs": 4,
        "steps_per_epoch": 4,
        "trials": 3,
        "startup_trials": 2,
        "seeds": 1,
    },
}
ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 2}


# ----------------------------------------------------------------------------------------------------------
# the curve (pure: tests/benchmarks/test_sweep_efficiency.py)


def efficiency_curve(
    rows: list[dict[str, Any]],
    steps_per_epoch: int,
    metric: str = names.sdr_metric("valid", "vocals"),
    select: str = names.sdr_metric("test", "vocals"),
    mode: str = "max",
) -> list[dict[str, Any]]:
    """One point per configuration trained, in the order the trials ended.

    ``rows``: one per configuration (MLflow child run) with ``run_id``, ``end_time`` (any sortable number),
    ``epochs`` (logged), ``outcome``, ``metric`` and ``select`` values. A point holds the cumulative ``steps``,
    the ``pick`` (run id of the finished trial with the best ``metric`` so far, None before any finished) and
    its ``pick_metric`` / ``pick_test`` (its ``select`` value; NaN when it has none).
    """
    sign = 1.0 if mode == "max" else -1.0
    steps = 0
    best: dict[str, Any] | None = None
    points = []
    for row in sorted(rows, key=lambda r: (r["end_time"], r["run_id"])):
        steps += int(row.get("epochs") or 0) * steps_per_epoch
        value = _float(row.get(metric))
        if row.get("outcome") == names.FINISHED and math.isfinite(value):
            if best is None or sign * value > sign * _float(best.get(metric)):
                best = row
        points.append(
            {
                "steps": steps,
                "trial": row["run_id"],
                "pick": best["run_id"] if best else None,
                "pick_metric": _float(best.get(metric)) if best else math.nan,
                "pick_test": _float(best.get(select)) if best else math.nan,
            }
        )
    return points


def first_within(points: list[dict[str, Any]], reference: float, gap: float = TARGET_GAP_DB) -> int | None:
    """Trial-steps at the first point whose pick is within ``gap`` dB of ``reference`` (None: never)."""
    return next((p["steps"] for p in points if p["pick_test"] >= reference - gap), None)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ----------------------------------------------------------------------------------------------------------
# running the sweeps


def write_spec(work: Path, size: dict[str, Any], label: str, algorithm: str, seed: int) -> Path:
    """A spec derived from the quickstart: its corpus, model and training, the benchmark's space and budget."""
    spec = yaml.safe_load(BASE_SPEC.read_text())
    spec.pop("smoke_test", None)
    spec["name"] = f"efficiency-{label}"
    spec["description"] = f"benchmarks/sweep_efficiency.py: {label}"
    search: dict[str, Any] = {"algorithm": algorithm, "max_concurrent": 2, "seed": seed}
    search["params"] = copy.deepcopy(size["params"])
    if algorithm != "grid":
        search["num_samples"] = size["trials"]
    if algorithm == "optuna":
        search["startup_trials"] = size["startup_trials"]
    spec["search"] = search
    spec["scheduler"] = {"type": "none"} if algorithm == "grid" else dict(ASHA)
    spec["budget"] = {
        "epochs": size["epochs"],
        "steps_per_epoch": size["steps_per_epoch"],
        "sweep_seconds": None,
    }
    spec["top_k"] = 1000  # every finished trial gets its test SDR
    path = work / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(work: Path, spec_path: Path, env: dict[str, str]) -> tuple[int, float]:
    """``sweeps/run.py SPEC`` in the work folder; (exit status, wall seconds). Its output goes to a log file."""
    started = time.time()
    with open(spec_path.with_suffix(".log"), "w") as log:
        proc = subprocess.run(
            [sys.executable, str(REPO / "sweeps" / "run.py"), str(spec_path), "--num-cpus", "2"],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc.returncode, time.time() - started


def sweep_rows(work: Path, spec_path: Path, uri: str) -> tuple[list[dict[str, Any]], int]:
    """The sweep's leaderboard rows (one per configuration) with the end time of each run; its Ray trials."""
    from sepray import tracking
    from sepray.sweep.leaderboard import collect_rows
    from sepray.sweep.spec import load_spec

    spec = load_spec(spec_path)
    exp_dir = work / "ray_results" / spec.name
    state = exp_dir / "sepray_sweep.json"
    if not state.is_file():  # the sweep failed before its parent run (its log says why)
        return [], 0
    parent = json.loads(state.read_text())["parent_run_id"]
    ended = {
        r.info.run_id: r.info.end_time or r.info.start_time
        for r in tracking.child_runs(spec.name, parent, uri)
    }
    rows = [r for r in collect_rows(spec, parent, uri) if r["outcome"] != names.ENSEMBLE]  # trials only
    for row in rows:
        row["end_time"] = ended.get(row["run_id"], 0)
    trials_file = exp_dir / "sepray_trials.json"
    trials = len(json.loads(trials_file.read_text())) if trials_file.is_file() else len(rows)
    return rows, trials


# ----------------------------------------------------------------------------------------------------------
# figures


def summarize(runs: list[dict[str, Any]], grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Per sweep: trials, configurations, trial-steps (and share of the grid's), its final pick's test SDR, the
    gap to the grid's pick, and the trial-steps at which it first came within the target gap."""
    grid_steps = grid["curve"][-1]["steps"] if grid["curve"] else 0
    grid_best = grid["curve"][-1]["pick_test"] if grid["curve"] else math.nan
    out = []
    for run in runs:
        curve = run["curve"]
        steps = curve[-1]["steps"] if curve else 0
        best = curve[-1]["pick_test"] if curve else math.nan
        within = first_within(curve, grid_best)
        out.append(
            {
                "strategy": run["strategy"],
                "seed": run["seed"],
                "trials": run["trials"],
                "configs": len(curve),
                "steps": steps,
                "share": steps / grid_steps if grid_steps else math.nan,
                "best_test": best,
                "gap": best - grid_best,
                "within_share": within / grid_steps if within is not None and grid_steps else math.nan,
                "wall": run["wall"],
            }
        )
    return out


def format_table(summary: list[dict[str, Any]]) -> str:
    head = ["strategy", "seed", "trials (configs)", "trial-steps", "% of grid", "test vocals dB", "gap dB"]
    head += [f"% to within {TARGET_GAP_DB} dB", "wall s"]
    lines = []
    for s in summary:
        lines.append(
            [
                s["strategy"],
                "" if s["seed"] is None else str(s["seed"]),
                f"{s['trials']:g} ({s['configs']:g})",
                f"{s['steps']:g}",
                _pct(s["share"]),
                _db(s["best_test"]),
                f"{s['gap']:+.2f}" if math.isfinite(s["gap"]) else "-",
                _within(s),
                f"{s['wall']:.0f}",
            ]
        )
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*c) for c in lines)]
    )


def medians(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The median over seeds of every strategy that ran with more than one seed."""
    out = []
    for strategy in dict.fromkeys(s["strategy"] for s in summary):
        group = [s for s in summary if s["strategy"] == strategy]
        if len(group) < 2:
            continue
        row = {"strategy": f"{strategy} (median)", "seed": None}
        for key in ("trials", "configs", "steps", "share", "best_test", "gap", "wall"):
            row[key] = statistics.median(s[key] for s in group)
        within = [s["within_share"] if math.isfinite(s["within_share"]) else math.inf for s in group]
        row["within_share"] = statistics.median(within)
        row["within_share"] = row["within_share"] if math.isfinite(row["within_share"]) else math.nan
        row["never"] = f"{sum(math.isinf(w) for w in within)} of {len(group)}"  # seeds that never got there
        out.append(row)
    return out


def plot(runs: list[dict[str, Any]], grid: dict[str, Any], path: Path) -> None:
    """Best-so-far test SDR against trial-steps (as % of the grid's), one step line per sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid_steps = grid["curve"][-1]["steps"]
    grid_best = grid["curve"][-1]["pick_test"]
    colors = {"grid": "black", "random+ASHA": "tab:blue", "TPE+ASHA": "tab:orange"}
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for run in runs:
        pts = [p for p in run["curve"] if math.isfinite(p["pick_test"])]
        if not pts:
            continue
        xs = [100 * p["steps"] / grid_steps for p in pts]
        ys = [p["pick_test"] for p in pts]
        seed = run["seed"]
        label = run["strategy"] if seed is None else f"{run['strategy']} seed {seed}"
        style = "-" if seed is None else ("--", ":", "-.")[seed % 3]
        ax.step(xs, ys, where="post", color=colors.get(run["strategy"]), ls=style, label=label, alpha=0.8)
        ax.plot(xs[-1], ys[-1], "o", color=colors.get(run["strategy"]), ms=4)
    ax.axhspan(grid_best - TARGET_GAP_DB, grid_best, color="tab:green", alpha=0.12, label="target")
    ax.axvline(100 * TARGET_SHARE, color="tab:green", ls="--", lw=1)
    ax.set_xlabel("trial-steps spent (% of the exhaustive grid's)")
    ax.set_ylabel("test SDR vocals of the pick so far (dB)")
    ax.set_title("pick = finished trial with the best validation SDR so far", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _within(s: dict[str, Any]) -> str:
    """The first trial-steps within the target gap; for a median, how many seeds never got there."""
    never = s.get("never", "0 of 1")
    if not math.isfinite(s["within_share"]):
        return f"never ({never})" if "never" in s else "never"
    return _pct(s["within_share"]) + (f" ({never} never)" if not never.startswith("0 ") else "")


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %" if math.isfinite(value) else "-"


def _db(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"


# ----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="4 configurations, 4 x 4 steps: checks the pipeline (~5 min), its figures mean little",
    )
    parser.add_argument("--seeds", type=int, help="seeds of random / TPE (default 2, quick 1)")
    parser.add_argument(
        "--trials", type=int, help="Ray trials of random / TPE (default 12 of 18, quick 3 of 4)"
    )
    parser.add_argument(
        "--workdir", help="scratch folder: mlflow.db, ray_results, specs, logs (default: temporary)"
    )
    parser.add_argument(
        "--out", help="PNG of the curves (default WORKDIR/sweep_efficiency.png); JSON beside it"
    )
    parser.add_argument("--from-json", help="print and draw the curves of an earlier run's JSON; run nothing")
    args = parser.parse_args()
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())
        out = Path(args.out).resolve() if args.out else Path(args.from_json).with_suffix(".png")
        report(raw, out, Path(args.from_json))
        return
    size = dict(SIZES["quick" if args.quick else "full"])
    size["trials"] = args.trials or size["trials"]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sepray-efficiency-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve() if args.out else work / "sweep_efficiency.png"
    raw = run_all(work, size, range(args.seeds or size["seeds"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str))
    report(raw, out, out.with_suffix(".json"))


def run_all(work: Path, size: dict[str, Any], seeds) -> dict[str, Any]:
    """The grid, then random and TPE for each seed, one sweep after another; their curves."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    plan = [("grid", "grid", None)] + [
        (strategy, algorithm, seed)
        for seed in seeds
        for strategy, algorithm in (("random+ASHA", "random"), ("TPE+ASHA", "optuna"))
    ]
    started = time.time()
    runs = []
    for strategy, algorithm, seed in plan:
        label = algorithm if seed is None else f"{algorithm}-s{seed}"
        spec_path = write_spec(work, size, label, algorithm, seed or 0)
        print(
            f"running {strategy}{'' if seed is None else f' seed {seed}'} ({spec_path.name}) ...", flush=True
        )
        status, wall = run_sweep(work, spec_path, env)
        if status != 0:
            print(f"  exit status {status}: see {spec_path.with_suffix('.log')}", flush=True)
        rows, trials = sweep_rows(work, spec_path, uri)
        curve = efficiency_curve(rows, size["steps_per_epoch"])
        tests = [_float(r.get(names.sdr_metric("test", "vocals"))) for r in rows]
        oracle = max((t for t in tests if math.isfinite(t)), default=math.nan)
        runs.append(
            {
                "strategy": strategy,
                "seed": seed,
                "trials": trials,
                "wall": wall,
                "curve": curve,
                "oracle": oracle,
            }
        )
        print(
            f"  {trials} trials, {len(curve)} configurations, {curve[-1]['steps'] if curve else 0} trial-steps, "
            f"{wall:.0f} s",
            flush=True,
        )
    return {"size": size, "runs": runs, "total_wall_s": time.time() - started, "work": str(work)}


def report(raw: dict[str, Any], out: Path, raw_path: Path) -> None:
    """Print the table and the target line; draw the PNG."""
    size, runs = raw["size"], raw["runs"]
    grid = runs[0]
    summary = summarize(runs, grid)
    print(
        f"\n{len(grid['curve'])} configurations "
        f"({' x '.join(str(len(v['choice'])) for v in size['params'].values())}: {', '.join(size['params'])}), "
        f"{size['epochs']} epochs x {size['steps_per_epoch']} steps each at most; random / TPE: {size['trials']} "
        "Ray trials, ASHA grace 1, reduction factor 2; 2 trials at a time"
    )
    print(
        "test vocals = full test songs (museval framewise median SDR) of the finished trial with the best "
        "validation vocals SDR; gap = that minus the grid's pick"
    )
    print(format_table(summary + medians(summary)))
    print(
        f"grid: its pick {_db(grid['curve'][-1]['pick_test'] if grid['curve'] else math.nan)} dB; the best test "
        f"SDR of any grid point {_db(grid['oracle'])} dB (an oracle that looks at the test songs)"
    )
    met = [
        s
        for s in summary[1:]
        if math.isfinite(s["gap"]) and s["gap"] >= -TARGET_GAP_DB and s["share"] <= TARGET_SHARE
    ]
    print(
        f"target (within {TARGET_GAP_DB} dB of the grid's pick with <= {100 * TARGET_SHARE:.0f} % of its "
        f"trial-steps) met by {len(met)} of {len(summary) - 1} sweeps: "
        + (", ".join(f"{s['strategy']} seed {s['seed']}" for s in met) or "none")
    )
    if grid["curve"]:
        plot(runs, grid, out)
    print(
        f"curves: {out} (raw: {raw_path}); work folder {raw['work']}; total wall {raw['total_wall_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
