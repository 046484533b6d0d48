"""`sepray score --metric bss_eval_v3`: the per-song scores, the summary and the table of BSS Eval v3.

Per song (`sepray.bss_eval.score_clip`): SDR / SIR / SAR of each source over the whole song (mono: channels are
averaged), in fixed order (each estimate against its own reference), and NSDR = SDR - SDR of the song's mixture
as the estimate. Over songs: GNSDR / GSIR / GSAR (and GSDR), means weighted by song length, as the MIR-1K
literature reports. Reading the folders is `sepray.scoring`'s.
"""

from __future__ import annotations

import math

from sepray.bss_eval import global_scores, score_clip
from sepray.numbers import json_safe

METRIC = (
    "bss_eval_v3 (BSS Eval v3 bss_eval_sources over each whole song, mono, 512-tap filter, fixed order; "
    "NSDR = SDR - SDR of the mixture; G* = means over songs weighted by length)"
)
SUMMED = "sum of references"  # a song without mixture.wav / mix.wav: its mixture is the references' sum
KEYS = ("sdr", "nsdr", "sir", "sar")  # the table's columns per source


def song_scores(song: str, sources, refs, ests, mixture, files, notes: list[str]) -> dict[str, dict]:
    """BSS Eval v3 of one song -> {source: {"sdr", "sir", "sar", "nsdr", "mix_sdr"}}; a note for each source
    left undefined by a silent file. ``refs``, ``ests``: (S, C, T); ``mixture``: (C, T); ``files``: the
    (reference, estimate) {source: path} dicts, for the note."""
    scores = score_clip(sources, refs, ests, mixture)
    undefined = [src for src in sources if math.isnan(scores[src]["sdr"])]
    if undefined:
        silent = [
            str(paths[src])
            for paths, audio in zip(files, (refs, ests), strict=True)
            for i, src in enumerate(sources)
            if not audio[i].mean(0).any()
        ]
        notes.append(
            f"{song}: BSS Eval v3 undefined ('-') for {', '.join(undefined)}: silent throughout (as mono): "
            f"{', '.join(silent)}"
        )
    return scores


def result(songs: dict, seconds: dict, mixtures: dict, channels: set[int], notes: list[str]) -> dict:
    """The JSON-safe result (notes appended to ``notes``)::

    {"metric": METRIC, "songs": {song: {source: {"sdr", "sir", "sar", "nsdr", "mix_sdr"}}},
     "seconds": {song: length in s}, "mixture": {song: "mixture.wav" | "mix.wav" | SUMMED},
     "gnsdr" / "gsir" / "gsar" / "gsdr": {source: length-weighted mean over songs}}
    """
    summed = [song for song, how in mixtures.items() if how == SUMMED]
    notes.append(
        "NSDR's mixture: the reference song's mixture.wav (else mix.wav), else the sum of its scored reference "
        f"sources ({len(summed)} of {len(mixtures)} songs: {', '.join(summed) or 'none'})"
    )
    notes.append(
        "fixed order: each <source>.wav estimate is scored against its own reference (no permutation)"
    )
    if channels - {1}:
        notes.append("multichannel audio downmixed to mono (mean of the channels): bss_eval_sources is mono")
    return {
        "metric": METRIC,
        "songs": json_safe(songs),
        "seconds": seconds,
        "mixture": mixtures,
        **{name: json_safe(values) for name, values in global_scores(songs, seconds).items()},
    }


def table(result: dict, sources: list[str]) -> tuple[list[str], list[str], list[list]]:
    """(titles, header, rows) of the score table: SDR, NSDR, SIR, SAR per song and source, then the
    length-weighted means (GSDR, GNSDR, GSIR, GSAR) as the last row; cells are floats, None or ""."""
    rows = [
        [song] + [scores.get(src, {}).get(key, "") for src in sources for key in KEYS]
        for song, scores in result["songs"].items()
    ]
    total = sum(result["seconds"].values())
    rows.append(
        [f"length-weighted mean ({len(result['songs'])} songs, {total:.1f} s)"]
        + [result[f"g{key}"].get(src) for src in sources for key in KEYS]
    )
    header = ["song"] + [f"{src} {key.upper()}" for src in sources for key in KEYS]
    return [f"{result['metric']}, dB", "last row: GSDR, GNSDR, GSIR, GSAR per source"], header, rows
