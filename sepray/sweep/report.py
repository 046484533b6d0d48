"""The sweep report: ``report/index.html`` on the sweep's MLflow parent run, PNG figures and audio beside it.

* Leaderboard: one row per trial -- test SDR per source with its spread over songs and a 95 % bootstrap
  interval, validation SDR, outcome (failed trials with their error), epochs, size, training time, separation
  speed (``test_x_realtime``), the searched values; the best by ``select`` marked, and whether it is
  distinguishable from the runner-up (:mod:`sepray.sweep.report_stats`).
* Listen: the top trials' excerpts (mixture, estimates, references) copied from their child runs into
  ``report/audio/<run id>/`` so that the links stay relative, with their spectrograms.
* Look: :mod:`sepray.sweep.report_plots` (Pareto fronts, SDR per epoch, parallel coordinates, importance).

``index.html`` links its files relatively (no network, no script): download the ``report/`` folder and open it.
MLflow shows HTML artifacts in a sandboxed frame where relative links cannot resolve, so ``inline.html`` is the
same page with every image and sound embedded, for viewing right in the run's Artifacts tab.
Built at the end of a sweep and again by ``sepray report``; no Ray here.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepray import SOURCES, names, tracking
from sepray.atomic import file_in_the_way, folder_written_atomically
from sepray.errors import UsageError, UserPathError
from sepray.numbers import is_finite
from sepray.owned_folders import FolderKind, check_replaceable, write_manifest
from sepray.sweep import report_plots, report_stats
from sepray.sweep.leaderboard import collect_rows, format_leaderboard, has_model, rank
from sepray.sweep.objectives import select_parts
from sepray.sweep.report_html import render
from sepray.sweep.song_scores import run_song_scores

LISTEN_TOP = 3  # trials whose excerpts the report plays
REPORT_DIR = names.REPORT.rsplit("/", 1)[0]
INLINE = "inline.html"
NOTE_MARK = "\n\n---\n**Sweep report**"


# ----------------------------------------------------------------------------------------------------------
# which sweep


@dataclass(frozen=True)
class SearchedKey:
    key: str


@dataclass(frozen=True)
class SweepView:
    """What the leaderboard needs of a spec, read back from the parent run's params (for `sepray report/runs`)."""

    name: str
    metric: str
    mode: str
    select: str
    top_k: int
    params: tuple[SearchedKey, ...]
    test_metric: str = names.MUSEVAL_V4


def find_parent(sweep: str, uri: str | None = None):
    """The parent run of sweep ``sweep`` (its newest one) or the parent run with that id."""
    if tracking.RUN_ID.fullmatch(sweep):
        run = tracking.get_run(sweep, uri)
        if run.data.tags.get(names.KIND) != "sweep":
            raise UsageError(f"run {sweep} is not a sweep's parent run (tag {names.KIND} is not 'sweep')")
        return run
    runs = tracking.find_runs(sweep, f"tags.`{names.KIND}` = 'sweep'", uri)
    if not runs:
        raise UsageError(f"{sweep!r}: no sweep of that name in {tracking.tracking_uri(uri)}")
    return max(runs, key=lambda r: r.info.start_time)


def view_of(parent, uri: str) -> SweepView:
    p = parent.data.params
    experiment = tracking.experiment(parent.info.experiment_id, uri)
    return SweepView(
        name=experiment.name,
        metric=p.get("metric", names.sdr_metric("valid", "vocals")),
        mode=p.get("mode", "max"),
        select=p.get("select", names.sdr_metric("test", "vocals")),
        top_k=int(p.get("top_k", 3)),
        params=tuple(SearchedKey(k) for k in p.get("searched", "").split(",") if k),
        test_metric=p.get("test_metric", names.MUSEVAL_V4),
    )


def ranked_rows(spec, parent_run_id: str, uri: str) -> list[dict[str, Any]]:
    """The leaderboard rows of a sweep (finished or running), ranked, the parent's best marked."""
    rows = collect_rows(spec, parent_run_id, uri)
    best_id = tracking.get_run(parent_run_id, uri).data.tags.get(names.BEST_RUN_ID)
    best = next((r for r in rows if r["run_id"] == best_id), None)
    return rank(rows, spec, best)


def leaderboard_text(sweep: str, uri: str | None = None) -> str:
    """``sepray runs``: the plain-text leaderboard of a finished or running sweep, from MLflow."""
    uri = tracking.tracking_uri(uri)
    parent = find_parent(sweep, uri)
    spec = view_of(parent, uri)
    status = parent.data.tags.get(names.SWEEP_STATUS, "running")
    head = f"sweep {spec.name} (parent run {parent.info.run_id}, {status})"
    return head + "\n" + format_leaderboard(ranked_rows(spec, parent.info.run_id, uri), spec)


def rebuild_report(sweep: str, uri: str | None = None, out: str | Path | None = None) -> str:
    """``sepray report``: build the report of a sweep again, log it on its parent run (and copy it to ``out``).

    ``out`` is checked first (:func:`check_report_out`): where it holds anything but a report sepray wrote,
    nothing is built, logged or copied."""
    if out is not None:
        check_report_out(Path(out))
    uri = tracking.tracking_uri(uri)
    parent = find_parent(sweep, uri)
    return publish_report(view_of(parent, uri), parent.info.run_id, uri, out)


# ----------------------------------------------------------------------------------------------------------
# building it


def publish_report(spec, parent_run_id: str, uri: str, out: str | Path | None = None) -> str:
    """Build the report into a temporary folder, log it as ``report/`` on the parent run, link it in the
    parent's description; returns where to find it."""
    rows = ranked_rows(spec, parent_run_id, uri)
    with tempfile.TemporaryDirectory(prefix="sepray-report-") as tmp:
        folder = Path(tmp) / REPORT_DIR
        write_report(folder, spec, rows, uri)
        parent = tracking.Run(parent_run_id, uri)
        parent.log_artifacts(folder, REPORT_DIR)
        if out is not None:
            copy_report(folder, Path(out), parent_run_id)
    experiment_id = tracking.get_run(parent_run_id, uri).info.experiment_id
    view = model_training_url(uri, experiment_id)
    _set_note(parent, view)
    where = f"artifact {names.REPORT} of run {parent_run_id}"
    if out is not None:
        where += f", copied to {Path(out) / 'index.html'}"
    return f"{where}; runs table: {view}"


REPORT_FOLDER = FolderKind(
    manifest=".sepray-report.json",
    format="sepray-report",
    command="sepray report",
    hint="move it away or choose another --out folder",
)
"""``sepray report --out DIR`` writes this manifest into DIR; only such a folder (holding nothing but the files
it lists) or an empty folder is replaced by a new copy."""


def check_report_out(out: Path) -> bool:
    """May the report be copied to ``out``? False: nothing there; True: an empty folder or a report copied
    there before, replaced. UserPathError (one line naming it) for anything else, which is left untouched."""
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise UserPathError(f"{blocker}: is not a folder, cannot create the report folder {out}")
    return check_replaceable(out, REPORT_FOLDER, allow_empty=True)


def copy_report(folder: Path, out: Path, parent_run_id: str) -> None:
    """Copy a built report folder to ``out`` whole or not at all (a full disk leaves nothing half-copied:
    NoSpaceError naming ``out``), with its manifest; ``out`` is checked again just before it is replaced."""
    with folder_written_atomically(out, check_report_out) as tmp:
        for src in sorted(folder.rglob("*")):
            dst = tmp / src.relative_to(folder)
            if src.is_dir():
                dst.mkdir(exist_ok=True)
            else:
                shutil.copyfile(src, dst)
        write_manifest(tmp, REPORT_FOLDER, parent_run_id=parent_run_id)


def model_training_url(uri: str, experiment_id: str) -> str:
    """The MLflow UI's "Model training" view of the experiment (its Runs table)."""
    view = names.MODEL_TRAINING_VIEW.format(experiment_id=experiment_id)
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{view}"
    return f"http://127.0.0.1:5000/{view} (after `mlflow ui --backend-store-uri {uri}`)"


def _set_note(parent: tracking.Run, view: str) -> None:
    note = parent.info().data.tags.get(names.NOTE, "").split(NOTE_MARK)[0]
    parent.set_tags(
        {
            names.NOTE: note
            + NOTE_MARK
            + f": artifact `{names.REPORT}` (leaderboard, audio, plots; download the `{REPORT_DIR}/` folder "
            f"and open `index.html`), or `{REPORT_DIR}/{INLINE}` to view it in this run's Artifacts tab.\n\n"
            f"All trials in the Model training view: {view}"
        }
    )


def write_report(folder: Path, spec, rows: list[dict[str, Any]], uri: str) -> None:
    """``folder/index.html`` + ``inline.html``, ``images/*.png`` and ``audio/<run id>/*`` of the top trials."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    per_song = {r["run_id"]: run_song_scores(r["run_id"], uri, spec.select) for r in rows if _evaluated(r)}
    songs = {run_id: values for run_id, (values, _) in per_song.items()}
    weights = {run_id: lengths for run_id, (_, lengths) in per_song.items() if lengths}
    curves = {r["run_id"]: tracking.Run(r["run_id"], uri).metric_history(spec.metric) for r in rows}
    curves = {k: [(s, v) for s, v in pts if s >= 1] for k, pts in curves.items()}
    listen = [r for r in rows if has_model(r)][:LISTEN_TOP]
    excerpts = {r["run_id"]: _copy_excerpt(r["run_id"], folder, uri) for r in listen}
    images = _figures(folder / "images", spec, rows, curves)
    page = render(spec, rows, songs, excerpts, images, weights)
    (folder / "index.html").write_text(page(lambda rel: html.escape(rel)))
    (folder / INLINE).write_text(page(lambda rel: _data_uri(folder / rel)))


def _evaluated(row) -> bool:
    return any(is_finite(row.get(names.sdr_metric("test", s))) for s in SOURCES)


def _copy_excerpt(run_id: str, folder: Path, uri: str) -> list[str]:
    """The run's ``excerpt/`` files copied to ``audio/<run id>/``; their paths relative to ``folder``."""
    dst = folder / "audio" / run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            src = tracking.download_artifacts(run_id, names.EXCERPT, tmp, uri)
        except tracking.TrackingError:
            return []
        shutil.copytree(src, dst, dirs_exist_ok=True)
    return sorted(p.relative_to(folder).as_posix() for p in dst.iterdir())


def _figures(images: Path, spec, rows, curves) -> dict[str, str]:
    """name -> path relative to the report folder (or a sentence saying why the figure is absent)."""
    split, score, source = select_parts(spec.select)
    sdr = (
        f"{split}_{score}_{source or SOURCES[0]}" if split == "test" else names.sdr_metric("test", SOURCES[0])
    )
    out: dict[str, str] = {}
    figs = {
        "pareto_speed": report_plots.pareto_figure(
            rows, names.x_realtime_metric("test"), sdr, "separation speed (x real time)", f"{sdr} (dB)", True
        ),
        "pareto_size": report_plots.pareto_figure(
            rows, names.NUM_PARAMETERS_PARAM, sdr, "parameters", f"{sdr} (dB)", False
        ),
        "curves": report_plots.curves_figure(curves, rows, spec.metric),
        "parallel": report_plots.parallel_figure(rows, [p.key for p in spec.params], spec.metric),
    }
    points = [(_searched(r, spec), r.get(spec.metric)) for r in rows]
    importances, note = report_stats.param_importance(points, spec.mode)
    out["importance_note"] = note
    if importances:
        figs["importance"] = report_plots.importance_figure(importances)
    for name, fig in figs.items():
        fig.savefig(images / f"{name}.png", dpi=100)
        out[name] = f"images/{name}.png"
    return out


def _searched(row, spec) -> dict[str, Any]:
    return {p.key: row[p.key] for p in spec.params if row.get(p.key) not in ("", None)}


def _data_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def publish_report_or_note(spec, parent: tracking.Run, uri: str, log=print) -> None:
    """Publish the report at the end of a sweep; a failure here is a note, not an error (the sweep's results are
    logged already)."""
    try:
        where = publish_report(spec, parent.run_id, uri)
    except Exception as exc:  # the sweep's results are logged already; the report is `sepray report` away
        log(
            f"note: could not build the sweep report ({type(exc).__name__}: {exc}); retry: sepray report {spec.name}"
        )
        return
    log(f"report: {where}")
