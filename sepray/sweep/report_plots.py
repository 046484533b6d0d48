"""The sweep report's figures (matplotlib, Agg): Pareto fronts, SDR-vs-epoch curves, parallel coordinates of
the searched values, parameter importance. Each function returns a closed figure to save as PNG."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sepray import names  # noqa: E402
from sepray.numbers import is_finite  # noqa: E402

SIZE = (6.4, 4.0)


def pareto_front(points: list[tuple[float, float]], larger_x_better: bool) -> list[int]:
    """Indices of the points (x, sdr) no other point beats on both (sdr higher, x better), sorted by x."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = False
        for j, (x2, y2) in enumerate(points):
            better_x = x2 >= x if larger_x_better else x2 <= x
            strictly = y2 > y or (x2 > x if larger_x_better else x2 < x)
            if j != i and y2 >= y and better_x and strictly:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto_figure(
    rows: list[dict[str, Any]], x_key: str, y_key: str, xlabel: str, ylabel: str, larger_x_better: bool
):
    """Scatter of ``y_key`` against ``x_key`` (log x) over rows that have both; the front joined and ringed."""
    fig, ax = plt.subplots(figsize=SIZE)
    have = [r for r in rows if is_finite(r.get(x_key)) and is_finite(r.get(y_key)) and r.get(x_key) > 0]
    points = [(float(r[x_key]), float(r[y_key])) for r in have]
    if points:
        ax.scatter(*zip(*points, strict=True), color="tab:blue", zorder=2, label="trial")
        front = pareto_front(points, larger_x_better)
        fx, fy = zip(*(points[i] for i in front), strict=True)
        ax.plot(fx, fy, color="tab:red", zorder=1, label="Pareto front")
        ax.scatter(fx, fy, s=120, facecolors="none", edgecolors="tab:red", zorder=3)
        for r, (x, y) in zip(have, points, strict=True):
            ax.annotate(str(r.get("rank", "")), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no trial has both values", ha="center", va="center", transform=ax.transAxes)
    better = "right" if larger_x_better else "left"
    ax.set_xlabel(f"{xlabel} (log scale; better to the {better})")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


def curves_figure(curves: dict[str, list[tuple[int, float]]], rows: list[dict[str, Any]], metric: str):
    """``metric`` per epoch of every trial in one plot; a trial that did not finish ends in a cross."""
    fig, ax = plt.subplots(figsize=SIZE)
    by_id = {r["run_id"]: r for r in rows}
    cmap = plt.get_cmap("tab10")
    for i, (run_id, points) in enumerate(curves.items()):
        if not points:
            continue
        row = by_id.get(run_id, {})
        steps, values = zip(*points, strict=True)
        label = f"#{row.get('rank', '?')} {row.get('outcome', '')}"
        ax.plot(steps, values, marker="o", ms=3, color=cmap(i % 10), label=label)
        if row.get("outcome") != names.FINISHED:
            ax.scatter([steps[-1]], [values[-1]], marker="x", s=80, color=cmap(i % 10), zorder=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (dB)")
    ax.set_title("x = stopped before the end of its budget (ASHA, time cap) or failed", fontsize=9)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    plt.close(fig)
    return fig


def parallel_figure(rows: list[dict[str, Any]], keys: list[str], metric: str):
    """Parallel coordinates: one axis per searched key (scaled to its range; categories spaced evenly), one
    line per trial coloured by ``metric``."""
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(keys) + 2), 4.0))
    have = [r for r in rows if is_finite(r.get(metric))]
    if not keys or not have:
        ax.text(0.5, 0.5, "no searched values or no metric values", ha="center", va="center")
        ax.set_axis_off()
        plt.close(fig)
        return fig
    scaled, labels = [], []
    for key in keys:
        values = [r.get(key, "") for r in have]
        numeric = [v for v in values if is_finite(v) and not isinstance(v, bool)]
        if numeric and len(numeric) == len([v for v in values if v != ""]):
            lo, hi = min(numeric), max(numeric)
            log = lo > 0 and hi / lo > 10
            f = (lambda v: math.log10(v)) if log else float
            span = (f(hi) - f(lo)) or 1.0
            scaled.append([(f(v) - f(lo)) / span if v != "" else math.nan for v in values])
            labels.append([f"{lo:.3g}", f"{hi:.3g}"])
        else:
            cats = sorted({str(v) for v in values if v != ""})
            n = max(1, len(cats) - 1)
            scaled.append([cats.index(str(v)) / n if v != "" else math.nan for v in values])
            labels.append(cats)
    metric_values = [float(r[metric]) for r in have]
    norm = matplotlib.colors.Normalize(min(metric_values), max(metric_values))
    cmap = plt.get_cmap("viridis")
    for i, value in enumerate(metric_values):
        ax.plot(range(len(keys)), [col[i] for col in scaled], color=cmap(norm(value)), lw=1.8, alpha=0.85)
    for j, (key, lab) in enumerate(zip(keys, labels, strict=True)):
        ax.axvline(j, color="grey", lw=0.8)
        ticks = [0.0, 1.0] if len(lab) == 2 and key else [k / max(1, len(lab) - 1) for k in range(len(lab))]
        for t, text in zip(ticks, lab, strict=False):
            ax.text(j + 0.03, t, text, fontsize=7, va="center")
    ax.set_xticks(range(len(keys)), [k.rsplit(".", 1)[-1] for k in keys])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(keys) - 0.6 if len(keys) > 1 else 0.8)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"{metric} (dB)")
    fig.tight_layout()
    plt.close(fig)
    return fig


def importance_figure(importances: dict[str, float]):
    """Horizontal bars of Optuna's importances, most important on top."""
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(importances) + 1.2))
    items = sorted(importances.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:green")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    plt.close(fig)
    return fig
