"""Score folders of separated WAVs against reference folders.

Layout of both folders: one sub-folder per song, holding ``<source>.wav`` files (``vocals.wav``,
``accompaniment.wav``, any other source). Every source present in both folders is scored for every song present
in both; ``mixture.wav`` is the separator's input, not a source, and is ignored.

Scores (see `sepray.metrics`): museval v4 SDR (1 s frames, median over frames per song, then median over songs)
and the MDX challenge utterance SDR. Audio is read only through `sepray.audio.read_audio`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from sepray import SOURCES
from sepray.atomic import write_text_atomically
from sepray.audio import read_audio
from sepray.errors import UserError
from sepray.metrics import median_sdr, sdr_frames, utterance_sdr
from sepray.numbers import json_safe, nanmedian

METRIC = "sdr (museval v4, 1 s frames, median over frames)"
UTTERANCE_METRIC = "utterance sdr (MDX challenge: 10*log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7)))"
IGNORED_STEMS = ("mixture",)
_TABLE_METRICS = {"sdr": (METRIC, "median"), "utterance_sdr": (UTTERANCE_METRIC, "median_utterance_sdr")}


class ScoringError(UserError, ValueError):
    """Folders that cannot be scored; the one-line message names the folder or file."""


def score_folders(
    reference_dir: str | os.PathLike,
    estimate_dir: str | os.PathLike,
    json_path: str | os.PathLike | None = None,
) -> dict:
    """Score every common song and source of two folder trees -> JSON-safe dict (written to `json_path` if given).

    All sources of a song are scored together (museval semantics: a frame where any reference or estimate is
    silent is NaN for every source). An estimate whose length differs from its reference is zero-padded or
    truncated to the reference length, as `museval.evaluate` does, and the result's ``"notes"`` say so.

    Result::

        {"metric": METRIC, "utterance_metric": UTTERANCE_METRIC,
         "songs": {song: {source: {"sdr": per-song median, "frames": [per-frame SDR, ...],
                                   "utterance_sdr": x}}},
         "median": {source: median over songs of the per-song "sdr"},
         "median_utterance_sdr": {source: median over songs of "utterance_sdr"},
         "unscored_songs": {"reference_only": [...], "estimate_only": [...]},
         "notes": ["...", ...]}

    Values are floats in dB; NaN (no defined frame) becomes ``None`` and +/-inf (an estimate equal to its
    reference) the strings ``"inf"`` / ``"-inf"``, so the dict is plain JSON. Medians skip NaN.

    Raises:
        ScoringError: a missing folder, no song in common, a common song with no source in common, or a
            reference/estimate pair differing in sample rate or channels (one line naming the folder/file).
        sepray.audio.AudioError: an unreadable WAV (one line naming the file).
    """
    reference_dir, estimate_dir = Path(reference_dir), Path(estimate_dir)
    reference_songs = _song_folders(reference_dir)
    estimate_songs = _song_folders(estimate_dir)
    common = sorted(set(reference_songs) & set(estimate_songs))
    if not common:
        raise ScoringError(f"{estimate_dir}: no song folder in common with reference folder {reference_dir}")

    songs: dict[str, dict] = {}
    notes: list[str] = []
    for song in common:
        songs[song] = _score_song(reference_dir / song, estimate_dir / song, notes)

    sources = _ordered({source for scores in songs.values() for source in scores})
    result = {
        "metric": METRIC,
        "utterance_metric": UTTERANCE_METRIC,
        "songs": {song: {src: json_safe(v) for src, v in scores.items()} for song, scores in songs.items()},
        "median": {src: json_safe(_median_over_songs(songs, src, "sdr")) for src in sources},
        "median_utterance_sdr": {
            src: json_safe(_median_over_songs(songs, src, "utterance_sdr")) for src in sources
        },
        "unscored_songs": {
            "reference_only": sorted(set(reference_songs) - set(common)),
            "estimate_only": sorted(set(estimate_songs) - set(common)),
        },
        "notes": notes,
    }
    if json_path is not None:
        _write_json_atomic(Path(json_path), result)
    return result


def format_table(result: dict, metric: str = "sdr") -> str:
    """A readable table of `score_folders`' result: one row per song, one column per source, then the median row.

    `metric` is ``"sdr"`` (museval v4 per-song median, the default) or ``"utterance_sdr"``; the first line
    names it.
    """
    if metric not in _TABLE_METRICS:
        raise ValueError(f"metric must be one of {sorted(_TABLE_METRICS)}, got {metric!r}")
    title, median_key = _TABLE_METRICS[metric]
    sources = _ordered({src for scores in result["songs"].values() for src in scores})
    rows = [
        [song] + [_cell(scores.get(src, {}).get(metric, "")) for src in sources]
        for song, scores in result["songs"].items()
    ]
    rows.append(
        [f"median ({len(result['songs'])} songs)"] + [_cell(result[median_key].get(src)) for src in sources]
    )
    header = ["song"] + list(sources)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        )

    rule = "-" * len(line(header))
    body = [line(row) for row in rows[:-1]]
    return "\n".join([f"{title}, dB", line(header), rule, *body, rule, line(rows[-1])])


def _score_song(reference_song: Path, estimate_song: Path, notes: list[str]) -> dict[str, dict]:
    """Score the sources of one song jointly -> {source: {"sdr", "frames", "utterance_sdr"}} (raw floats)."""
    ref_files = _source_files(reference_song)
    est_files = _source_files(estimate_song)
    sources = _ordered(set(ref_files) & set(est_files))
    if not sources:
        raise ScoringError(
            f"{estimate_song}: no <source>.wav in common with reference folder {reference_song} "
            f"(reference has {sorted(ref_files) or 'none'}, estimate has {sorted(est_files) or 'none'})"
        )

    references, estimates, rate = [], [], None
    for source in sources:
        ref, ref_rate = read_audio(ref_files[source])
        est, est_rate = read_audio(est_files[source])
        if est_rate != ref_rate:
            raise ScoringError(
                f"{est_files[source]}: sample rate {est_rate} Hz, reference {ref_files[source]} has {ref_rate} Hz"
            )
        if est.shape[0] != ref.shape[0]:
            raise ScoringError(
                f"{est_files[source]}: {est.shape[0]} channel(s), reference {ref_files[source]} has {ref.shape[0]}"
            )
        if rate is None:
            rate, length, first = ref_rate, ref.shape[1], ref_files[source]
        elif ref_rate != rate or ref.shape[1] != length or ref.shape[0] != references[0].shape[0]:
            raise ScoringError(
                f"{ref_files[source]}: {ref_rate} Hz, {ref.shape[0]} channel(s), {ref.shape[1]} samples, but "
                f"{first} has {rate} Hz, {references[0].shape[0]} channel(s), {length} samples "
                "(reference sources of a song must match)"
            )
        if est.shape[1] != ref.shape[1]:
            action = "zero-padded" if est.shape[1] < ref.shape[1] else "truncated"
            notes.append(
                f"{est_files[source]}: {est.shape[1]} samples, reference has {ref.shape[1]}; "
                f"estimate {action} to the reference length (as museval does)"
            )
            est = est[:, : ref.shape[1]] if est.shape[1] > ref.shape[1] else _pad(est, ref.shape[1])
        references.append(ref)
        estimates.append(est)

    refs = torch.stack(references)  # (S, C, T)
    ests = torch.stack(estimates)  # (S, C, T)
    frames = sdr_frames(refs, ests, rate)  # (S, F)
    medians = median_sdr(frames)  # (S,)
    utterance = utterance_sdr(refs, ests)  # (S,)
    return {
        source: {"sdr": float(medians[i]), "frames": frames[i].tolist(), "utterance_sdr": float(utterance[i])}
        for i, source in enumerate(sources)
    }


def _song_folders(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise ScoringError(f"{root}: no such folder")
    return {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _source_files(song: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in song.iterdir()
        if p.is_file()
        and p.suffix.lower() == ".wav"
        and p.stem not in IGNORED_STEMS
        and not p.name.startswith(".")
    }


def _ordered(sources: set[str]) -> list[str]:
    """sepray's sources first (vocals, accompaniment), then the others alphabetically."""
    return [s for s in SOURCES if s in sources] + sorted(sources - set(SOURCES))


def _pad(audio: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(audio, (0, length - audio.shape[1]))


def _median_over_songs(songs: dict[str, dict], source: str, key: str) -> float:
    return nanmedian([scores[source][key] for scores in songs.values() if source in scores])


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.2f}"


def _write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
