"""After a sweep: evaluate the top-k trials with a model on the full test songs, pick the best, publish the table.

Stage one (during the sweep) is cheap: ASHA and the searcher see the validation metric on fixed crops.
Stage two runs here: the ``top_k`` trials that hold a model package -- those that finished their budget and
those a time limit cut after at least one epoch (outcome ``cut_by_time``, the model of their last completed
epoch) -- by that metric are evaluated on every full test song
(:func:`sepray.evaluate.evaluate_run`, museval-exact framewise SDR, logged on each trial's run as
``test_sdr_<source>``), and the best by ``select`` (default ``test_sdr_vocals``) wins. The parent run gets the
leaderboard as a table artifact, the best run id as a tag, and the best model is registered in the MLflow
model registry under the sweep's name -- or the ensemble of the evaluated trials, when it is better beyond
noise (:mod:`sepray.sweep.ensemble_stage`). No Ray here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any

from sepray import SOURCES, names, tracking
from sepray.numbers import is_finite
from sepray.sweep.objectives import bss_columns, describe_select, select_parts, select_value, test_metric_of


def collect_rows(spec, parent_run_id: str, uri: str) -> list[dict[str, Any]]:
    """One row per child run of the sweep: per distinct configuration (a trial), and its ensemble (outcome
    "ensemble") when the sweep built one."""
    rows = []
    for r in tracking.child_runs(spec.name, parent_run_id, uri):
        m, p, t = r.data.metrics, r.data.params, r.data.tags
        if t.get(names.KIND) == names.ENSEMBLE and r.info.status != "FINISHED":
            continue  # an ensemble stage that did not finish (its driver was killed): no row
        row: dict[str, Any] = {
            "run_id": r.info.run_id,
            "model": t.get(names.MODEL) or p.get("model.name", ""),
            "outcome": t.get(names.OUTCOME, r.info.status.lower()),
            "status": r.info.status,
            "epochs": int(m.get(names.EPOCH, 0)),
            "cut_by": t.get(names.CUT_BY, ""),
            spec.metric: m.get(spec.metric),
        }
        for s in SOURCES:
            row[names.sdr_metric("valid", s)] = m.get(names.sdr_metric("valid", s))
        row[names.TRAIN_SECONDS_METRIC] = m.get(names.TRAIN_SECONDS_METRIC)
        kept = _int(t.get(names.EPOCHS))
        if row["outcome"] == names.CUT_BY_TIME and kept is not None and 0 < kept < row["epochs"]:
            _values_of_epoch(row, kept, spec, uri)  # it logged an epoch later than its model's checkpoint
        for s in SOURCES:
            row[names.sdr_metric("test", s)] = m.get(names.sdr_metric("test", s))
        for key in bss_columns(spec):  # test_metric bss_eval_v3: test_gnsdr_vocals, ...
            row[key] = m.get(key)
        row[names.NUM_PARAMETERS_PARAM] = _int(p.get(names.NUM_PARAMETERS_PARAM))
        row[names.x_realtime_metric("test")] = m.get(names.x_realtime_metric("test"))
        row["last_error"] = t.get(names.LAST_ERROR, "")
        row["run_name"] = r.info.run_name or ""
        sampled = json.loads(t.get(names.SAMPLED, "{}"))
        for param in spec.params:
            row[param.key] = sampled.get(param.key, "")  # "" when the parameter was inactive (`when:`)
        row["retries"] = _int(t.get(names.RETRIES)) or 0
        reasons = {names.FAILED: row["last_error"], names.CUT_BY_TIME: row["cut_by"]}
        reasons[names.ENSEMBLE] = t.get(names.ENSEMBLE_VERDICT, "")  # what it was built of, how it compares
        row["reason"] = reasons.get(row["outcome"], "")
        row["signature"] = t.get(names.SIGNATURE, "")
        row["trial_id"] = t.get(names.TRIAL_ID, "")
        rows.append(row)
    return rows


def _values_of_epoch(row: dict[str, Any], epoch: int, spec, uri: str) -> None:
    """Set the row's epochs and validation values to those of ``epoch``, the epoch its model is from: Tune cut
    the trial while it was logging a later epoch whose checkpoint Tune never recorded."""
    row["epochs"] = epoch
    run = tracking.Run(row["run_id"], uri)
    for key in {spec.metric, names.TRAIN_SECONDS_METRIC, *(names.sdr_metric("valid", s) for s in SOURCES)}:
        row[key] = dict(run.metric_history(key)).get(epoch)


def has_model(row: dict[str, Any]) -> bool:
    """Whether the row's run holds a model package: it finished its budget, or a time limit cut it after at
    least one epoch (a FINISHED run either way; a cut run without a model ends KILLED)."""
    return row.get("outcome") in names.MODEL_OUTCOMES and row.get("status") == "FINISHED"


def top_k(rows: list[dict[str, Any]], spec) -> list[dict[str, Any]]:
    """The ``spec.top_k`` rows with a model (:func:`has_model`), best validation metric first (rows without a
    value last)."""
    done = [r for r in rows if has_model(r)]
    sign = -1.0 if spec.mode == "max" else 1.0
    return sorted(done, key=lambda r: sign * r[spec.metric] if is_finite(r.get(spec.metric)) else math.inf)[
        : spec.top_k
    ]


def evaluate_top_k(rows: list[dict[str, Any]], spec, uri: str, log=print, kept=None) -> list[dict[str, Any]]:
    """Evaluate the top-k rows on the full test songs (skipping runs already evaluated, e.g. on --resume);
    ``kept`` (:class:`sepray.sweep.ensemble_stage.KeptEstimates`) keeps their estimates for the ensemble."""
    from sepray.evaluate import evaluate_run

    chosen = top_k(rows, spec)
    for row in chosen:
        needed = [names.sdr_metric("test", s) for s in SOURCES] + bss_columns(spec)[: len(SOURCES)]  # + gnsdr
        if all(is_finite(row.get(key)) for key in needed):
            continue
        log(f"evaluating run {row['run_id']} ({row['model']}) on the full test songs")
        keep = kept.keeper(row["run_id"]) if kept is not None else None
        result = evaluate_run(row["run_id"], uri=uri, device="auto", metric=test_metric_of(spec), keep=keep)
        for s in SOURCES:
            row[names.sdr_metric("test", s)] = result["median"].get(s)
        row[names.x_realtime_metric("test")] = result["x_realtime"]
        for key in bss_columns(spec):
            _, score, source = select_parts(key)
            row[key] = result[names.BSS_EVAL_V3][score][source]
    return chosen


def choose_best(evaluated: list[dict[str, Any]], spec) -> dict[str, Any] | None:
    """The evaluated row with the highest ``spec.select`` value (None when no row has one)."""
    candidates = [r for r in evaluated if math.isfinite(select_value(r, spec.select))]
    return max(candidates, key=lambda r: select_value(r, spec.select)) if candidates else None


def rank(rows: list[dict[str, Any]], spec, best: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows in leaderboard order (trials evaluated by ``select`` first, then by the validation metric; a sweep's
    ensemble after them), with ``rank`` (1-based; "E" for the ensemble) and ``best`` filled in."""
    trials = sorted((r for r in rows if r.get("outcome") != names.ENSEMBLE), key=lambda r: _rank_key(r, spec))
    ranked = trials + [r for r in rows if r.get("outcome") == names.ENSEMBLE]
    for i, row in enumerate(ranked, 1):
        row["rank"] = i if i <= len(trials) else "E"
        row["best"] = best is not None and row["run_id"] == best["run_id"]
    return ranked


def finish_sweep(spec, parent: tracking.Run, uri: str, log=print) -> dict[str, Any]:
    """Evaluate the top-k, choose the best by ``spec.select``, build the ensemble of the evaluated trials (it wins
    only when it is better beyond noise, :mod:`sepray.sweep.ensemble_stage`), log the leaderboard, register the
    best model."""
    from sepray.sweep.ensemble_stage import kept_estimates, sweep_ensemble

    rows = [r for r in collect_rows(spec, parent.run_id, uri) if r["outcome"] != names.ENSEMBLE]
    with kept_estimates(spec) as kept:
        evaluated = evaluate_top_k(rows, spec, uri, log, kept)
        best = choose_best(evaluated, spec)
        rank(rows, spec, best)  # the members' ranks, for the ensemble's lines
        ensemble = sweep_ensemble(spec, parent.run_id, uri, evaluated, best, kept, log)
    if ensemble is not None:
        rows += [r for r in collect_rows(spec, parent.run_id, uri) if r["run_id"] == ensemble.run_id]
        best = rows[-1] if ensemble.wins else best
    ranked = rank(rows, spec, best)
    columns = leaderboard_columns(spec)
    table = {c: [_cell(r.get(c)) for r in ranked] for c in columns}
    text = format_leaderboard(ranked, spec)
    tracking.log_table(parent, table, "leaderboard.json")
    parent.log_text(_csv(ranked, columns), "leaderboard.csv")
    parent.log_text(text + "\n", "leaderboard.txt")
    outcome: dict[str, Any] = {"leaderboard": ranked, "best_run_id": None, "text": text}
    log("")
    log(text)
    if best is None:
        reason = no_best_reason(rows, evaluated, spec)
        parent.set_tags({names.BEST_RUN_ID: "none", names.NO_BEST_REASON: reason})
        log(f"no best model: {reason}")
        outcome["no_best_reason"] = reason
        return outcome
    version = tracking.register_model(best["run_id"], spec.name, uri)
    parent.set_tags({names.BEST_RUN_ID: best["run_id"], names.REGISTERED_MODEL: f"{spec.name}/{version}"})
    parent.log_metrics({f"best_{spec.select}": select_value(best, spec.select)})
    tracking.Run(best["run_id"], uri).set_tags({names.BEST: "true"})
    outcome.update(best_run_id=best["run_id"], registered_version=version)
    log("")
    log(winner_line(best, spec, version))
    baselines = trivial_baselines(best["run_id"], uri)
    if baselines:
        outcome["baselines"] = baselines
        parent.log_metrics({f"best_{k}": v for k, v in baselines.items()})
        log(format_baselines(baselines, best))
    log("separate a song with it:")
    log(f"  {separate_command(best['run_id'], uri)}")
    return outcome


def winner_line(best: dict[str, Any], spec, version: str) -> str:
    """``best: run ... registered as model ... version N``, and when a time limit cut it, after which epoch."""
    line = (
        f"best: run {best['run_id']} ({best['model']}), {spec.select} = {select_value(best, spec.select):.2f} dB "
        f"({describe_select(spec.select)}), registered as model {spec.name!r} version {version}"
    )
    return line + (f"; {cut_note(best, spec)}" if best.get("outcome") == names.CUT_BY_TIME else "")


def cut_note(row: dict[str, Any], spec) -> str:
    """``cut by the time limit (budget.sweep_seconds = 420 s) after epoch 7 of 8, 383.2 s of training``."""
    limit = row.get("cut_by") or "a time limit"
    seconds = {
        names.SWEEP_LIMIT: spec.budget.sweep_seconds,
        names.TRIAL_LIMIT: spec.budget.trial_seconds,
    }.get(limit)
    limit = f"{limit} = {seconds:g} s" if seconds is not None else limit
    spent = row.get(names.TRAIN_SECONDS_METRIC)
    trained = f", {float(spent):.1f} s of training" if is_finite(spent) else ""
    return f"cut by the time limit ({limit}) after epoch {row['epochs']} of {spec.epochs}{trained}"


def no_best_reason(rows: list[dict[str, Any]], evaluated: list[dict[str, Any]], spec) -> str:
    """Why a sweep has no best model, in one line: no trial completed an epoch, none has a model, or none of
    the evaluated ones has a finite ``select`` value; with the count of trials by outcome."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "none"
    summary = f"trials (one per configuration): {summary}"
    if not any(int(row.get("epochs") or 0) >= 1 for row in rows):
        return f"no trial completed an epoch ({summary})"
    if not evaluated:
        return f"no trial has a model: none finished its budget or was cut after an epoch ({summary})"
    return f"no evaluated trial has a finite {spec.select} on the test songs ({summary})"


def trivial_baselines(run_id: str, uri: str) -> dict[str, float]:
    """Test SDR of the trivial estimates (the mixture, half the mixture) that evaluate_run logged on the run."""
    metrics = tracking.get_run(run_id, uri).data.metrics
    out = {}
    for name in names.BASELINES:
        for s in SOURCES:
            if is_finite(metrics.get(names.sdr_metric("test", s, name))):
                out[names.sdr_metric("test", s, name)] = float(metrics[names.sdr_metric("test", s, name)])
    return out


def format_baselines(baselines: dict[str, float], best: dict[str, Any]) -> str:
    """One line: the trivial estimates on the same test songs and the best model's gain over the better one."""
    parts = []
    for name, label in (("mix", "the mixture"), ("halfmix", "half the mixture")):
        vals = " / ".join(_num(baselines.get(names.sdr_metric("test", s, name))) for s in SOURCES)
        parts.append(f"{label} {vals} dB")
    line = f"trivial estimates on the same test songs ({' / '.join(SOURCES)}): " + ", ".join(parts)
    gains = []
    for s in SOURCES:
        trivial = [baselines.get(names.sdr_metric("test", s, n)) for n in names.BASELINES]
        trivial = [v for v in trivial if is_finite(v)]
        if trivial and is_finite(best.get(names.sdr_metric("test", s))):
            gains.append(f"{float(best[f'test_sdr_{s}']) - max(trivial):+.2f} dB {s}")
    return line + (f"; the best model's gain over the better of them: {', '.join(gains)}" if gains else "")


def separate_command(run_id: str, uri: str) -> str:
    """The exact command that separates a song with the run's model (naming the store unless it is the default)."""
    command = f"sepray separate --run-id {run_id} song.wav -o separated"
    default = tracking.tracking_uri("sqlite:///" + tracking.DEFAULT_DB)
    if uri == default and "MLFLOW_TRACKING_URI" not in os.environ:
        return command
    return f"MLFLOW_TRACKING_URI={uri} {command}"


def leaderboard_columns(spec) -> list[str]:
    cols = ["rank", "best", "run_id", "model", "outcome", "epochs"]
    cols += [names.sdr_metric("test", s) for s in SOURCES] + bss_columns(spec)
    cols += [spec.metric] + [
        names.sdr_metric("valid", s) for s in SOURCES if names.sdr_metric("valid", s) != spec.metric
    ]
    cols += [names.NUM_PARAMETERS_PARAM, names.TRAIN_SECONDS_METRIC] + [p.key for p in spec.params]
    return cols + ["retries", "reason"]


def format_leaderboard(rows: list[dict[str, Any]], spec) -> str:
    """A plain-text table: test SDR of the evaluated top-k, validation metric, size, time, searched values."""
    head = ["#", "run id", "model", "outcome", "ep"]
    bss = bss_columns(spec)[: len(SOURCES)]  # test_gnsdr_<source>, with test_metric bss_eval_v3
    head += [f"test {s[:5]}" for s in SOURCES] + [f"gnsdr {s[:5]}" for s in SOURCES if bss]
    head += [_short_metric(spec.metric), "params", "train s", "searched"]
    lines = []
    for r in rows:
        searched = " ".join(
            f"{p.key.split('.')[-1]}={_short_value(r[p.key])}"
            for p in spec.params
            if r.get(p.key) not in ("", None)
        )
        cells = [
            f"{r['rank']}{'*' if r.get('best') else ''}",
            r["run_id"],
            r["model"],
            r["outcome"],
            "-" if r["outcome"] == names.ENSEMBLE else str(r["epochs"]),
            *(_num(r.get(names.sdr_metric("test", s))) for s in SOURCES),
            *(_num(r.get(key)) for key in bss),
            _num(r.get(spec.metric)),
            _size(r.get(names.NUM_PARAMETERS_PARAM)),
            _num(r.get(names.TRAIN_SECONDS_METRIC), 1),
            searched,
        ]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    title = (
        f"leaderboard of sweep {spec.name}: test = full test songs, museval v4 framewise SDR (dB, median over 1 s "
        f"frames, then songs), top-{spec.top_k} only; {_short_metric(spec.metric)} = validation crops, "
        f"utterance SDR (dB). * = best by {spec.select}"
        + ("; gnsdr = BSS Eval v3 NSDR over whole test songs, mean weighted by length (dB)" if bss else "")
    )
    out = [title, fmt.format(*head), fmt.format(*("-" * w for w in widths[:-1]), "-" * 8)]
    out += [fmt.format(*cells) for cells in lines]
    out += [
        f"{r['rank']}: {r['outcome']}: {r['reason']}" for r in rows if r.get("reason")
    ]  # why trials failed, which limit cut them
    out += bss_lines(rows, spec)
    retried = [f"#{r['rank']} ({r['retries']}x)" for r in rows if r.get("retries")]
    if retried:
        out.append(f"restarted from a checkpoint by Ray (node lost, crash): {', '.join(retried)}")
    return "\n".join(out)


def bss_lines(rows: list[dict[str, Any]], spec) -> list[str]:
    """With ``test_metric: bss_eval_v3``: GNSDR / GSIR / GSAR per source of each evaluated row, one line each
    (the MIR-1K literature's three figures); none otherwise."""
    if not bss_columns(spec):
        return []
    scores = ("gnsdr", "gsir", "gsar")
    lines = []
    for r in rows:
        cells = [[r.get(names.global_metric("test", g, s)) for g in scores] for s in SOURCES]
        if any(is_finite(v) for values in cells for v in values):
            parts = [
                f"{s} {' / '.join(_num(v) for v in values)}" for s, values in zip(SOURCES, cells, strict=True)
            ]
            lines.append(f"  #{r['rank']}{'*' if r.get('best') else ''} {r['run_id']}: {'   '.join(parts)}")
    if not lines:
        return []
    return [
        "BSS Eval v3 of the evaluated trials, GNSDR / GSIR / GSAR (dB, means over test songs weighted by length):"
    ] + lines


def _rank_key(row: dict[str, Any], spec) -> tuple:
    sel = select_value(row, spec.select) if spec.select.startswith("test") else float("nan")
    val = row.get(spec.metric)
    val = float(val) if is_finite(val) else float("-inf") if spec.mode == "max" else float("inf")
    sign = -1.0 if spec.mode == "max" else 1.0
    return (0 if math.isfinite(sel) else 1, -sel if math.isfinite(sel) else 0.0, sign * val)


def _short_value(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if number.is_integer() and "." not in str(value) else f"{number:.4g}"


def _short_metric(metric: str) -> str:
    return metric.replace("valid_sdr_", "valid ").replace("valid_sdr", "valid")


def _csv(rows, columns) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def _cell(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(value, digits: int = 2) -> str:
    return f"{float(value):.{digits}f}" if is_finite(value) else "-"


def _size(value) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
