"""The sweep report's HTML page (no script, no network): leaderboard, the best-vs-runner-up verdict, audio
players and figures. :func:`render` returns ``page(src)``, where ``src`` turns a path relative to the report
folder into the link to write (the path itself for ``index.html``, a data URI for ``inline.html``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from typing import Any

import numpy as np

from sepray import SOURCES, names
from sepray.numbers import is_finite
from sepray.sweep import report_stats
from sepray.sweep.leaderboard import select_value
from sepray.sweep.naming import short_value
from sepray.sweep.objectives import is_bss_select, select_parts
from sepray.sweep.song_scores import song_values

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.best { background: #fff4c2; }
td.num { text-align: right; white-space: nowrap; }
.small { font-size: 0.8em; color: #555; }
.listen { display: flex; flex-wrap: wrap; gap: 1em; }
.track { border: 1px solid #ddd; padding: 0.5em; }
img { max-width: 100%; }
"""


def _num(value, digits: int = 2) -> str:
    return f"{float(value):.{digits}f}" if is_finite(value) else "-"


def _outcome(row: dict[str, Any]) -> str:
    outcome = row.get("outcome", "")
    text = {names.STOPPED_EARLY: "stopped early", names.CUT_BY_TIME: "cut by the time limit"}.get(
        outcome, outcome
    )
    if outcome == names.CUT_BY_TIME and row.get("cut_by"):
        text += f" ({row['cut_by']})"
    if outcome == names.FAILED and row.get("last_error"):
        text += f": {row['last_error']}"
    return text


def verdict(spec, rows, songs, weights=None) -> str:
    """Whether the best (by ``select``) is distinguishable from the runner-up on the same test songs (per-song
    values of ``select``'s kind; their mean weighted by song length for a BSS Eval select)."""
    split, _, source = select_parts(spec.select)
    if split != "test":
        return f"select is {spec.select}, a validation metric: no per-song test comparison."
    ranked = [r for r in rows if r["run_id"] in songs and math.isfinite(select_value(r, spec.select))]
    ranked = [
        r for r in ranked if r.get("outcome") != names.ENSEMBLE
    ]  # trials; the ensemble has its own line
    best = next((r for r in ranked if r.get("best")), None) or max(
        ranked, key=lambda r: select_value(r, spec.select), default=None
    )
    if best is None:
        return "No best trial (no trial finished its budget and was evaluated)."
    others = [r for r in ranked if r is not best]
    if not others:
        return f"The best is trial #{best['rank']}; it is the only one evaluated on the test songs."
    runner = max(others, key=lambda r: select_value(r, spec.select))
    comparison = report_stats.paired_comparison(
        song_values(songs[best["run_id"]], source),
        song_values(songs[runner["run_id"]], source),
        weights=(weights or {}).get(best["run_id"]),
    )
    return (
        f"Best by {spec.select}: trial #{best['rank']}; runner-up: trial #{runner['rank']}. "
        f"{comparison.text()}."
    )


def leaderboard_table(spec, rows, songs, weights=None) -> str:
    """Test columns: ``select``'s kind per song -- museval SDR (median over songs), or for a BSS Eval select its
    score (GNSDR ...: mean over songs weighted by length, with museval's test SDR in plain columns after)."""
    weights = weights or {}
    _, score, _ = select_parts(spec.select)
    bss = is_bss_select(spec.select)
    head = ["#", "run", "outcome", "epochs"]
    if bss:
        head += [f"test {score.upper()} {s} (dB): length-weighted mean [95% CI], song range" for s in SOURCES]
        head += [f"test {g.upper()} {s} (dB)" for g in _other_bss(score) for s in SOURCES]
        head += [f"test SDR {s} (dB, museval median)" for s in SOURCES]
    else:
        head += [f"test {s} (dB): median [95% CI], song range" for s in SOURCES]
    valid = [names.sdr_metric("valid", s) for s in SOURCES]
    head += [f"{m} (dB)" for m in valid] + ([f"{spec.metric}"] if spec.metric not in valid else [])
    head += ["parameters", "train s", "x real time", "searched values"]
    out = ["<table id='leaderboard'>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = [
            f"{r['rank']}{' (best)' if r.get('best') else ''}",
            f"{escape(r.get('run_name') or r['model'])}<br><span class='small'>{r['run_id']}</span>",
            escape(_outcome(r)),
            str(r.get("epochs", "")),
        ]
        run_songs, lengths = songs.get(r["run_id"], {}), weights.get(r["run_id"])
        for s in SOURCES:
            per_song = [v.get(s) for v in run_songs.values()]
            if per_song:
                w = [lengths[song] for song in run_songs] if bss and lengths else None
                interval = report_stats.bootstrap_interval(per_song, np.mean if w else np.median, weights=w)
                low, high = report_stats.spread(per_song)
                cells.append(f"{interval.text()}<br><span class='small'>{_num(low)} .. {_num(high)}</span>")
            else:
                cells.append(_num(r.get(f"test_{score}_{s}" if bss else names.sdr_metric("test", s))))
        if bss:
            cells += [
                _num(r.get(names.global_metric("test", g, s))) for g in _other_bss(score) for s in SOURCES
            ]
            cells += [_num(r.get(names.sdr_metric("test", s))) for s in SOURCES]
        cells += [_num(r.get(m)) for m in valid] + (
            [_num(r.get(spec.metric))] if spec.metric not in valid else []
        )
        size = r.get(names.NUM_PARAMETERS_PARAM)
        cells += [
            f"{size:,}" if size is not None else "-",
            _num(r.get(names.TRAIN_SECONDS_METRIC), 1),
            _num(r.get(names.x_realtime_metric("test")), 1),
            escape(
                " ".join(
                    f"{p.key}={short_value(r[p.key])}" for p in spec.params if r.get(p.key) not in ("", None)
                )
            ),
        ]
        numeric = {0, 3} | set(range(4, len(cells) - 1))
        tds = "".join(
            f"<td class='num'>{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells)
        )
        kind = "ensemble" if r.get("outcome") == names.ENSEMBLE else "trial"
        out.append(f"<tr class='{kind}{' best' if r.get('best') else ''}'>{tds}</tr>")
    out.append("</table>")
    return "\n".join(out)


def listen_section(rows, excerpts: dict[str, list[str]], src: Callable[[str], str]) -> str:
    if not excerpts:
        return "<p>No finished trial has an audio excerpt.</p>"
    by_id = {r["run_id"]: r for r in rows}
    out = []
    for run_id, files in excerpts.items():
        r = by_id[run_id]
        out.append(f"<h3>#{r['rank']} {escape(r.get('run_name') or r['model'])}</h3>")
        if not files:
            out.append("<p>This trial logged no excerpt.</p>")
            continue
        wavs = [f for f in files if f.endswith(".wav")]
        order = ["mixture"] + [f"{s}_{kind}" for s in SOURCES for kind in ("estimate", "reference")]
        wavs.sort(
            key=lambda f: order.index(f.rsplit("/", 1)[-1][:-4]) if f.rsplit("/", 1)[-1][:-4] in order else 99
        )
        out.append("<div class='listen'>")
        for f in wavs:
            label = f.rsplit("/", 1)[-1][:-4].replace("_", " ")
            out.append(
                f"<div class='track'><div>{escape(label)}</div>"
                f"<audio controls preload='auto' src='{src(f)}'></audio></div>"
            )
        out.append("</div>")
        for f in files:
            if f.endswith(".png"):
                out.append(f"<p><img src='{src(f)}' alt='spectrograms of trial #{r['rank']}'></p>")
    return "\n".join(out)


def _other_bss(score: str) -> list[str]:
    """The MIR-1K papers' three figures (GNSDR, GSIR, GSAR) other than ``select``'s own ``score``."""
    return [g for g in ("gnsdr", "gsir", "gsar") if g != score]


def _test_description(spec) -> str:
    if is_bss_select(spec.select):
        score = select_parts(spec.select)[1].upper()
        return (
            f"BSS Eval v3 over each whole song ({score} = mean over songs weighted by song length, the MIR-1K "
            "literature's convention); the interval is a 95 % bootstrap interval over songs (resampled with their "
            "lengths), the range the lowest and highest song; museval v4 framewise SDR (median) beside it"
        )
    return (
        "museval v4 framewise SDR, median over 1 s frames per song, then over songs; the interval is a 95 % "
        "bootstrap interval over songs, the range the lowest and highest song"
    )


def render(spec, rows, songs, excerpts, images, weights=None) -> Callable[[Callable[[str], str]], str]:
    """``page(src)``: the whole HTML document, links made by ``src``."""

    def page(src: Callable[[str], str]) -> str:
        def figure(name: str, caption: str) -> str:
            if name not in images:
                return ""
            return f"<figure><img src='{src(images[name])}' alt='{escape(caption)}'><figcaption>{escape(caption)}</figcaption></figure>"

        trials = [r for r in rows if r.get("outcome") != names.ENSEMBLE]
        evaluated = sum(1 for r in trials if r["run_id"] in songs)
        body = [
            f"<h1>Sweep {escape(spec.name)}</h1>",
            f"<p>{len(trials)} trials; the top {spec.top_k} finished by {escape(spec.metric)} (validation crops, "
            f"utterance SDR) were evaluated on the full test songs ({evaluated} here): {_test_description(spec)}. "
            "x real time = seconds of audio separated per second while evaluating.</p>",
            f"<p id='verdict'><b>{escape(verdict(spec, rows, songs, weights))}</b></p>",
            *(
                f"<p id='ensemble'><b>Ensemble{' (the winner)' if r.get('best') else ''}:</b> "
                f"{escape(r.get('reason') or r['run_id'])}</p>"
                for r in rows
                if r.get("outcome") == names.ENSEMBLE
            ),
            "<h2>Leaderboard</h2>",
            leaderboard_table(spec, rows, songs, weights),
            "<h2>Listen</h2>",
            "<p class='small'>A few seconds of a validation song, as each trial separated it.</p>",
            listen_section(rows, excerpts, src),
            "<h2>Look</h2>",
            figure(
                "pareto_speed", "Test SDR against separation speed; the Pareto front in red (number = rank)"
            ),
            figure("pareto_size", "Test SDR against parameter count; the Pareto front in red"),
            figure("curves", f"{spec.metric} per epoch of every trial"),
            figure("parallel", f"Searched values, one line per trial, coloured by {spec.metric}"),
            f"<h3>Parameter importance</h3><p>{escape(images.get('importance_note', ''))}</p>",
            figure("importance", "Parameter importance"),
        ]
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Sweep {escape(spec.name)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    return page
