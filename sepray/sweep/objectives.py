"""What a sweep optimises and how its winner is chosen: the spec keys ``target``, ``metric``, ``mode``,
``select`` and ``test_metric``, validated here, and the meaning of a ``select`` name.

* ``metric`` (validation crops, every epoch) drives ASHA and the searcher.
* ``test_metric`` is what the test stage computes on the full test songs of the top-k trials: ``museval_v4``
  (framewise SDR, median over frames then songs: ``test_sdr_<source>``) or ``bss_eval_v3`` (the same, plus
  BSS Eval v3 over each whole song: ``test_gnsdr_<source>``, ``test_gsir_``, ``test_gsar_``, ``test_gsdr_``,
  means over songs weighted by length, as the MIR-1K literature reports).
* ``select`` picks the winner among the evaluated trials (higher is better): a test score of ``test_metric``
  or a validation one. ``test_sdr`` / ``test_gnsdr`` without a source is the mean over sources. Unset, it is
  ``test_gnsdr_<target>`` with ``test_metric: bss_eval_v3``, else ``test_sdr_<target>``; a BSS Eval select
  (``test_gnsdr_vocals``) with ``test_metric`` unset implies ``bss_eval_v3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sepray import SOURCES, names
from sepray.numbers import is_finite
from sepray.schema import coerce
from sepray.sweep.sections import SpecError


@dataclass(frozen=True)
class Objectives:
    target: str
    metric: str
    mode: str
    select: str
    test_metric: str


def parse_objectives(raw: dict[str, Any], label: str) -> Objectives:
    """The objective keys of a spec, checked; each problem a one-line SpecError naming the key."""
    target = _text(raw, "target", "vocals", label)
    if target not in SOURCES:
        raise SpecError(f"{label}: target: {target!r} is not a source; expected one of {list(SOURCES)}")
    metric = _text(raw, "metric", names.sdr_metric("valid", target), label)
    mode = _text(raw, "mode", "max", label)
    if mode not in ("max", "min"):
        raise SpecError(f"{label}: mode: expected max or min, got {mode!r}")
    valid_metrics = [
        names.sdr_metric("valid"),
        names.VALID_LOSS,
        *(names.sdr_metric("valid", s) for s in SOURCES),
    ]
    if metric not in valid_metrics:
        raise SpecError(
            f"{label}: metric: {metric!r} is not reported per epoch; expected one of {valid_metrics}"
        )

    select_raw = _text(raw, "select", None, label)
    test_metric = _text(raw, "test_metric", None, label)
    if test_metric is not None and test_metric not in names.TEST_METRICS:
        raise SpecError(f"{label}: test_metric: {test_metric!r}: expected one of {list(names.TEST_METRICS)}")
    if test_metric is None:
        bss = select_raw is not None and is_bss_select(select_raw)
        test_metric = names.BSS_EVAL_V3 if bss else names.MUSEVAL_V4
    default_score = "gnsdr" if test_metric == names.BSS_EVAL_V3 else "sdr"
    select = select_raw or names.global_metric("test", default_score, target)
    if select not in select_choices(names.BSS_EVAL_V3):
        raise SpecError(
            f"{label}: select: {select!r}: expected one of {select_choices(names.BSS_EVAL_V3)} "
            f"(the test_g* scores need test_metric: {names.BSS_EVAL_V3})"
        )
    if select not in select_choices(test_metric):
        raise SpecError(
            f"{label}: select: {select!r} is a BSS Eval v3 score, but test_metric is {test_metric}: "
            f"set test_metric: {names.BSS_EVAL_V3} (or leave test_metric out)"
        )
    return Objectives(target, metric, mode, select, test_metric)


def select_choices(test_metric: str) -> list[str]:
    """The ``select`` names a sweep with this ``test_metric`` can use."""
    choices = [names.sdr_metric("test"), *(names.sdr_metric("test", s) for s in SOURCES)]
    if test_metric == names.BSS_EVAL_V3:
        choices.append(names.global_metric("test", "gnsdr"))
        choices += [names.global_metric("test", g, s) for g in names.BSS_GLOBALS for s in SOURCES]
    return choices + [names.sdr_metric("valid"), *(names.sdr_metric("valid", s) for s in SOURCES)]


def is_bss_select(select: str) -> bool:
    """Whether ``select`` is one of the BSS Eval v3 test scores (``test_gnsdr``, ``test_gsir_vocals``, ...)."""
    return any(select.startswith(names.global_metric("test", g)) for g in names.BSS_GLOBALS)


def select_parts(select: str) -> tuple[str, str, str | None]:
    """``test_gnsdr_vocals`` -> ("test", "gnsdr", "vocals"); ``test_sdr`` -> ("test", "sdr", None)."""
    split, score, *rest = select.split("_", 2)
    return split, score, rest[0] if rest else None


def select_value(row: dict[str, Any], select: str) -> float:
    """A leaderboard row's ``select`` value; ``test_sdr`` / ``test_gnsdr``: the mean over the sources that have one."""
    if select in (names.sdr_metric("test"), names.global_metric("test", "gnsdr")):
        vals = [row.get(f"{select}_{s}") for s in SOURCES]
        vals = [v for v in vals if is_finite(v)]
        return sum(vals) / len(vals) if vals else float("nan")
    value = row.get(select)
    return float(value) if is_finite(value) else float("nan")


def test_scores(test_metric: str) -> tuple[str, ...]:
    """The per-source test scores the test stage logs for ``test_metric`` (``sdr`` is museval v4's)."""
    return ("sdr", *names.BSS_GLOBALS) if test_metric == names.BSS_EVAL_V3 else ("sdr",)


def test_metric_of(spec) -> str:
    """A spec's (or a `SweepView`'s) ``test_metric``; museval v4 for objects that predate it."""
    return getattr(spec, "test_metric", None) or names.MUSEVAL_V4


def bss_columns(spec) -> list[str]:
    """The BSS Eval v3 test metrics a sweep's rows hold (``test_gnsdr_vocals``, ...): none for museval v4."""
    return [names.global_metric("test", g, s) for g in test_scores(test_metric_of(spec))[1:] for s in SOURCES]


def describe_select(select: str) -> str:
    """How the ``select`` value was computed, for the winner's line."""
    if is_bss_select(select):
        return "BSS Eval v3 over whole test songs, mean over songs weighted by length"
    if select.startswith("test"):
        return "museval framewise median"
    return "validation crops, utterance SDR"


def _text(raw: dict[str, Any], key: str, default: str | None, label: str) -> str | None:
    return default if raw.get(key) is None else coerce(raw[key], str, f"{label}: {key}")
