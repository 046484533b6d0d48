"""Readable names for a sweep's child runs: the model family and the searched values, e.g.
``waveunet levels=4 channels=16 upsampling=linear lr=2.8e-3`` (shown as the run name in the MLflow UI)."""

from __future__ import annotations

from typing import Any

MAX_NAME = 250  # MLflow keeps run names short


def short_value(value: Any) -> str:
    """A searched value as people write it: ``4``, ``linear``, ``2.8e-3``, ``0.75``, ``[3, 5]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace(" ", "")
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    if abs(value) < 1e-2 or abs(value) >= 1e4:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.3g}"


def trial_run_name(model: str, sampled: dict[str, Any]) -> str:
    """``<family> key=value ...`` over the active searched values (last part of each dotted key), in order."""
    parts = [model]
    for key, value in sampled.items():
        if key == "model.name":
            continue
        parts.append(f"{key.rsplit('.', 1)[-1]}={short_value(value)}")
    return " ".join(parts)[:MAX_NAME]
