"""``sepray`` command line: argument parsing only; every command calls a library function."""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import signal
import sys
from pathlib import Path

import sepray
from sepray import names
from sepray.cli_args import EXIT_USER_ERROR, OneLineParser, int_at_least, memory_size, positive_seconds
from sepray.errors import UsageError, UserError
from sepray.interrupts import sigterm_as_interrupt

DEFAULT_PRESET = "spec-unet-small"  # what `sepray train` trains when given no CONFIG


def _one_line(exc: BaseException) -> str:
    """The first line of an error's message; an OSError on a path says ``PATH: reason``."""
    if (
        isinstance(exc, OSError)
        and not isinstance(exc, UserError)
        and exc.filename is not None
        and exc.strerror
    ):
        return f"{exc.filename}: {exc.strerror}"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_run_id(run_id: str, store: str | None = None) -> None:
    """A well-formed run id; with ``store`` (read | write), a tracking store that can serve the command."""
    from sepray import tracking

    tracking.check_run_id(run_id)
    if store is not None:
        tracking.check(store)


def cmd_data_synth(args: argparse.Namespace) -> None:
    from sepray.data.synth import write_corpus

    paths = write_corpus(
        args.out, songs=args.songs, seconds=args.seconds, seed=args.seed, sample_rate=args.sample_rate
    )
    print(f"wrote {len(paths)} songs ({args.seconds:g} s each, CCMixter layout) to {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from sepray.config import load_config
    from sepray.train_run import train_run

    if args.config is None and args.resume is None:
        args.config = DEFAULT_PRESET
        print(f"no CONFIG given: training the default preset {DEFAULT_PRESET}", file=sys.stderr)
    if args.resume is not None:
        _check_run_id(args.resume)
    cfg = load_config(args.config, args.set) if args.config is not None else None
    if args.resume is not None and args.set and cfg is None:
        raise UsageError("--set needs CONFIG when resuming")
    result = train_run(
        cfg,
        experiment=args.experiment,
        run_name=args.run_name,
        checkpoint_root=args.checkpoint_root,
        resume_run_id=args.resume,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print(result.run_id)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from sepray.evaluate import evaluate_run, format_evaluation

    _check_run_id(args.run_id, store="write")  # the test SDR is logged back to the run
    result = evaluate_run(
        args.run_id,
        data_path=args.data,
        split=args.split,
        device=args.device,
        metric=args.metric,
        sample_rate=args.sample_rate,
    )
    print(format_evaluation(result))


def cmd_separate(args: argparse.Namespace) -> None:
    from sepray.ensemble.runs import separate_run  # a single model's run or an ensemble's

    _check_run_id(args.run_id)
    outs = separate_run(
        args.run_id,
        args.inputs,
        args.out,
        device=args.device,
        chunk_seconds=args.chunk_seconds,
        show_progress=not args.quiet,
        log=lambda msg: print(msg, file=sys.stderr),
        max_memory=args.max_memory,
        engine=args.engine,
    )
    for out in outs:
        print(out)


def cmd_ensemble(args: argparse.Namespace) -> None:
    from sepray.ensemble.build import ensemble_run

    log = functools.partial(print, file=sys.stderr)
    options = {"experiment": args.experiment, "run_name": args.name, "device": args.device, "log": log}
    with ensemble_run(args.run_ids, args.weights, **options) as built:
        weights = ", ".join(f"{w:.3g}" for w in built.ensemble.weights)
        log(
            f"ensemble of {len(args.run_ids)} runs, weights {weights}; evaluate it: sepray evaluate --run-id ID"
        )
    print(built.run.run_id)


def cmd_export(args: argparse.Namespace) -> None:
    from sepray.export.run import export_run

    _check_run_id(args.run_id)
    artifact, out = export_run(args.run_id, args.format, args.out)
    print(f"logged {artifact}/ to run {args.run_id}", file=sys.stderr)
    if out is not None:
        print(out)


def cmd_score(args: argparse.Namespace) -> None:
    from sepray.scoring import format_table, score_folders

    result = score_folders(args.reference_dir, args.estimate_dir, json_path=args.json, metric=args.metric)
    print(format_table(result))


def cmd_sweep(args: argparse.Namespace) -> int:
    from sepray.sweep.driver import run_sweep
    from sepray.sweep.raytune.callbacks import INTERRUPTED

    try:
        outcome = run_sweep(
            args.spec,
            args.set,
            smoke_test=args.smoke_test,
            resume=args.resume,
            address=args.address,
            num_cpus=args.num_cpus,
            resume_command=resume_command(args),
        )
    except KeyboardInterrupt as exc:  # 130 for Ctrl-C, 143 for SIGTERM
        return 128 + int(INTERRUPTED["signal"] or getattr(exc, "signum", signal.SIGINT))
    if outcome.get("interrupted"):
        return 128 + int(outcome.get("signal") or signal.SIGINT)
    if outcome.get("best_run_id"):
        return 0
    print(f"sepray: error: {args.spec}: no best model: {outcome.get('no_best_reason')}", file=sys.stderr)
    return 1


def resume_command(args: argparse.Namespace) -> str:
    """The command that finishes an interrupted sweep: the user's own, plus --resume."""
    script = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == "run.py" else None
    words = ["python", script] if script else ["sepray", "sweep"]
    words.append(args.spec)
    if args.address:
        words += ["--address", args.address]
    if args.smoke_test:
        words.append("--smoke-test")
    for item in args.set:
        words += ["--set", item]
    if args.num_cpus is not None:
        words += ["--num-cpus", str(args.num_cpus)]
    return shlex.join([*words, "--resume"])


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="sweep spec YAML, e.g. sweeps/quickstart.yaml")
    p.add_argument(
        "--address", default=None, help="join a Ray cluster: auto or HOST:PORT (default: local Ray)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this spec")
    p.add_argument("--smoke-test", action="store_true", help="tiny budget that exercises everything")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec key")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")


def cmd_report(args: argparse.Namespace) -> None:
    from sepray.sweep.report import rebuild_report

    print(rebuild_report(args.sweep, out=args.out))


def cmd_runs(args: argparse.Namespace) -> None:
    from sepray.sweep.report import leaderboard_text

    print(leaderboard_text(args.sweep))


def cmd_presets(args: argparse.Namespace) -> None:
    from sepray.config import preset_names

    for name in preset_names():
        print(name)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="sepray", description=sepray.__doc__)
    p.add_argument("--version", action="version", version=f"sepray {sepray.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write the built-in synthetic corpus (CCMixter layout)")
    synth.add_argument("out", type=Path)
    synth.add_argument("--songs", type=int_at_least(1), default=16)
    synth.add_argument("--seconds", type=positive_seconds, default=20.0)
    synth.add_argument("--seed", type=int_at_least(0), default=0)
    synth.add_argument("--sample-rate", type=int_at_least(8000), default=16000)
    synth.set_defaults(func=cmd_data_synth)

    train = sub.add_parser("train", help="train one separator, logged to MLflow; prints the run id last")
    train.add_argument(
        "config",
        nargs="?",
        help=f"YAML config path or preset name (see `sepray presets`; default: {DEFAULT_PRESET})",
    )
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-3"
    )
    train.add_argument("--experiment", default="sepray")
    train.add_argument("--run-name")
    train.add_argument("--checkpoint-root", default="runs", help="checkpoints go to CHECKPOINT_ROOT/<run id>")
    train.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its checkpoint")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="full-song test SDR of a logged model, logged back to its run")
    ev.add_argument("--run-id", required=True)
    ev.add_argument("--data", help="dataset folder (default: the run's own data config)")
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ev.add_argument("--device", default="auto")
    ev.add_argument(
        "--metric",
        choices=names.TEST_METRICS,
        default=names.MUSEVAL_V4,
        help="museval_v4 (default): framewise SDR; bss_eval_v3: also BSS Eval v3 over whole songs, logged as "
        "<split>_gnsdr_<source>, _gsir_, _gsar_ (length-weighted over songs)",
    )
    ev.add_argument(
        "--sample-rate",
        type=int_at_least(1),
        help="separate and score the songs at this rate in Hz (default: the run's data.eval_sample_rate, else "
        "the model's rate); a model at a lower rate keeps the band above it in the accompaniment, as separate does",
    )
    ev.set_defaults(func=cmd_evaluate)

    sep = sub.add_parser("separate", help="separate songs with a logged model into vocals / accompaniment")
    sep.add_argument("--run-id", required=True)
    sep.add_argument("inputs", nargs="+", help="audio files")
    sep.add_argument("-o", "--out", default="separated", help="output folder (one sub-folder per song)")
    sep.add_argument("--device", default="auto")
    sep.add_argument(
        "--chunk-seconds",
        type=positive_seconds,
        help="output seconds per model call (default: the longest that fits --max-memory)",
    )
    sep.add_argument(
        "--max-memory",
        type=memory_size,
        help="memory for one model call beyond the weights, e.g. 2G or 512M (default: half the free memory, at most 2G)",
    )
    sep.add_argument(
        "--engine",
        choices=["torch", "onnx", "torch-export"],
        default="torch",
        help="torch: the eager model; onnx / torch-export: the run's exported graph on the CPU (exported on "
        "the fly when the run has none; see `sepray export`)",
    )
    sep.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sep.set_defaults(func=cmd_separate)

    ens = sub.add_parser("ensemble", help="an ensemble of finished runs, logged as a run; prints its run id")
    ens.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="two or more runs with a model package")
    ens.add_argument("--name", help="the run's name (default: ensemble of <the members' run names>)")
    ens.add_argument(
        "--weights",
        choices=["fit", "equal"],
        default="fit",
        help="fit: on the members' common validation songs (they must share a data config); equal: 1 / runs",
    )
    ens.add_argument("--experiment", help="MLflow experiment of the run (default: the first member's)")
    ens.add_argument("--device", default="auto")
    ens.set_defaults(func=cmd_ensemble)

    exp = sub.add_parser(
        "export",
        help="export a logged model as a graph for fast CPU inference, logged back to its run (model/export/)",
    )
    exp.add_argument("--run-id", required=True)
    exp.add_argument("--format", choices=["onnx", "torch-export"], default="onnx")
    exp.add_argument(
        "-o",
        "--out",
        type=Path,
        help="also write a self-contained package with the export to this new folder",
    )
    exp.set_defaults(func=cmd_export)

    sc = sub.add_parser("score", help="museval-exact SDR of estimate folders against reference folders")
    sc.add_argument("reference_dir", type=Path)
    sc.add_argument("estimate_dir", type=Path)
    sc.add_argument("--json", type=Path, help="write per-song/source frame values and medians here")
    sc.add_argument(
        "--metric",
        choices=names.TEST_METRICS,
        default=names.MUSEVAL_V4,
        help="museval_v4: framewise SDR, median over 1 s frames, then songs (default); bss_eval_v3: BSS Eval v3 "
        "SDR/SIR/SAR over each whole song, NSDR, and GNSDR/GSIR/GSAR weighted by song length (MIR-1K papers)",
    )
    sc.set_defaults(func=cmd_score)

    sw = sub.add_parser(
        "sweep",
        help="run a sweep spec on Ray Tune (local Ray unless --address), tracked in MLflow",
        description="Run a sweep spec on Ray Tune (local Ray unless --address), tracked in MLflow. "
        "The same command as `python sweeps/run.py SPEC`.",
    )
    add_sweep_arguments(sw)
    sw.set_defaults(func=cmd_sweep)

    rep = sub.add_parser(
        "report",
        help="build a sweep's HTML report again and log it on its parent run (report/index.html)",
    )
    rep.add_argument("sweep", help="sweep name (its newest parent run) or the parent run id")
    rep.add_argument("--out", type=Path, help="also copy the report folder here (open OUT/index.html)")
    rep.set_defaults(func=cmd_report)

    runs = sub.add_parser("runs", help="print the leaderboard of a finished or running sweep from MLflow")
    runs.add_argument("sweep", help="sweep name (its newest parent run) or the parent run id")
    runs.set_defaults(func=cmd_runs)

    pr = sub.add_parser("presets", help="list the configs shipped with sepray")
    pr.set_defaults(func=cmd_presets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():
            code = args.func(args)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated): exit 130 / 143
        print("sepray: interrupted", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", signal.SIGINT))
    except (UserError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.filename is None:
            raise  # not about a path the user gave (e.g. a broken connection): a bug or an outage, in full
        print(f"sepray: error: {_one_line(exc)}", file=sys.stderr)
        if os.environ.get("SEPRAY_DEBUG"):
            raise
        return EXIT_USER_ERROR
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
