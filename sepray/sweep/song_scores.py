"""Per-song test scores of an evaluation (``evaluation/test_sdr.json`` of a run, or the result dict
:func:`sepray.evaluate.evaluate_songs` returns), of the kind a sweep's ``select`` names: what the report's
intervals and the paired comparisons (best vs runner-up, ensemble vs best single trial) resample."""

from __future__ import annotations

import json
import math
import tempfile
from typing import Any

from sepray import names, tracking
from sepray.bss_eval import GLOBAL_SCORES
from sepray.numbers import is_finite
from sepray.sweep.objectives import is_bss_select, select_parts


def song_scores(data: dict[str, Any], select: str) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """-> ({song: {source: dB}}, {song: seconds}): museval SDR per song (no lengths); for a BSS Eval select
    (``test_gnsdr_vocals``) the per-song NSDR (SIR, SAR, SDR for gsir, gsar, gsdr) and the song lengths that
    weight their mean. A missing value (null in the JSON) is NaN."""
    if not is_bss_select(select):
        return {
            song: {s: (float(v) if v is not None else math.nan) for s, v in vals.items()}
            for song, vals in data.get("songs", {}).items()
        }, {}
    bss = data.get(names.BSS_EVAL_V3) or {}
    key = GLOBAL_SCORES[select_parts(select)[1]]
    values = {
        song: {s: (float(v[key]) if v.get(key) is not None else math.nan) for s, v in vals.items()}
        for song, vals in bss.get("songs", {}).items()
    }
    return values, {song: float(seconds) for song, seconds in bss.get("seconds", {}).items()}


def run_song_scores(
    run_id: str, uri: str, select: str
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """:func:`song_scores` of the run's logged test evaluation (({}, {}) when it has none)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracking.download_artifacts(run_id, names.evaluation_artifact("test"), tmp, uri)
        except tracking.TrackingError:
            return {}, {}
        return song_scores(json.loads(path.read_text()), select)


def song_values(songs: dict[str, dict[str, float]], source: str | None) -> dict[str, float]:
    """Per-song score of one source, or the mean over sources (``source`` None, i.e. ``test_sdr``)."""
    out = {}
    for song, vals in songs.items():
        if source is None:
            finite = [v for v in vals.values() if is_finite(v)]
            out[song] = sum(finite) / len(finite) if finite else math.nan
        else:
            out[song] = vals.get(source, math.nan)
    return out
