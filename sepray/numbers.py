"""NaN-aware summaries and JSON-safe numbers, shared by training, evaluation, scoring and the leaderboard."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a number other than NaN / +-inf (False for None, strings, ...)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def nanmedian(values) -> float:
    """Median ignoring NaN; NaN (no warning) when nothing is finite."""
    arr = np.asarray(values, dtype=float)
    return float(np.nanmedian(arr)) if np.isfinite(arr).any() else float("nan")


def nanmean(values) -> float:
    """Mean ignoring NaN; NaN (no warning) when nothing is finite."""
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def json_safe(value: Any) -> Any:
    """Floats made valid JSON, recursively through dicts and lists: NaN -> None, +-inf -> "inf" / "-inf"."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(value)
    return value
