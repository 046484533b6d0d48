"""Score folders of separated WAVs against reference folders.

Layout of both folders: one sub-folder per song, holding ``<source>.wav`` files (``vocals.wav``,
``accompaniment.wav``, any other source). Every song present in both folders is scored; ``mixture.wav`` is the
separator's input, not a source, and is ignored. The scored sources are those the references have that are
either sepray's own (vocals, accompaniment) or estimated in some song; each of them must then be present in
every common song on both sides (a missing one is an error). Sources left out are listed in the notes.

Scores (see `sepray.metrics`): museval v4 SDR (1 s frames, median over frames per song, then median over songs)
and the MDX challenge utterance SDR; or, with ``metric="bss_eval_v3"`` (`sepray.bss_eval`), BSS Eval v3 SDR / SIR
/ SAR over each whole song and NSDR, with the length-weighted GNSDR / GSIR / GSAR over songs. Audio is read only
through `sepray.audio.read_audio`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from sepray import SOURCES, names, scoring_v3
from sepray.atomic import file_in_the_way, write_text_atomically
from sepray.audio import read_audio
from sepray.errors import UsageError, UserError
from sepray.metrics import median_sdr, sdr_frames, utterance_sdr
from sepray.numbers import json_safe

METRIC = "sdr (museval v4, 1 s frames, median over frames)"
UTTERANCE_METRIC = "utterance sdr (MDX challenge: 10*log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7)))"
IGNORED_STEMS = ("mixture",)
MIXTURE_STEMS = ("mixture", "mix")  # the mixture for NSDR (bss_eval_v3), in this order of preference
_TABLE_METRICS = {"sdr": (METRIC, "median"), "utterance_sdr": (UTTERANCE_METRIC, "median_utterance_sdr")}


class ScoringError(UserError, ValueError):
    """Folders that cannot be scored; the one-line message names the folder or file."""


def score_folders(
    reference_dir: str | os.PathLike,
    estimate_dir: str | os.PathLike,
    json_path: str | os.PathLike | None = None,
    metric: str = names.MUSEVAL_V4,
) -> dict:
    """Score every common song and source of two folder trees -> JSON-safe dict (written to `json_path` if given).

    ``metric="bss_eval_v3"`` scores with BSS Eval v3 instead: see `_bss_result` for that result's layout.

    All sources of a song are scored together (museval semantics: a frame where any reference or estimate is
    silent is NaN for every source). An estimate whose length differs from its reference is zero-padded or
    truncated to the reference length, as `museval.evaluate` does. The result's ``"notes"`` say so, and name
    the songs and sources left unscored and the files that make a song's SDR undefined (silent throughout).

    Result::

        {"metric": METRIC, "utterance_metric": UTTERANCE_METRIC,
         "songs": {song: {source: {"sdr": per-song median, "frames": [per-frame SDR, ...],
                                   "utterance_sdr": x}}},
         "median": {source: median over songs of the per-song "sdr"},
         "median_utterance_sdr": {source: median over songs of "utterance_sdr"},
         "unscored_songs": {"reference_only": [...], "estimate_only": [...]},
         "notes": ["...", ...]}

    Values are floats in dB; NaN (no defined frame) becomes ``None`` and +inf (an estimate equal to its
    reference) the string ``"inf"``, so the dict is plain JSON. Medians skip NaN and keep +inf: a median
    over songs of which at least half are exact is ``"inf"``; a note names every song and median that is.

    Raises:
        ScoringError: a missing folder, no song in common, a common song with no source in common or
            missing a scored source (see the module docstring), a reference/estimate pair differing in sample
            rate or channels, or a ``json_path`` that cannot be a file (checked before scoring); one line
            naming the folder/file.
        sepray.audio.AudioError: an unreadable WAV, or one with NaN/Inf samples (one line naming the file).
    """
    reference_dir, estimate_dir = Path(reference_dir), Path(estimate_dir)
    if metric not in names.TEST_METRICS:
        raise UsageError(f"--metric {metric!r}: expected one of {list(names.TEST_METRICS)}")
    if json_path is not None:
        _check_json_path(Path(json_path))
    reference_songs = _song_folders(reference_dir)
    estimate_songs = _song_folders(estimate_dir)
    common = sorted(set(reference_songs) & set(estimate_songs))
    if not common:
        raise ScoringError(f"{estimate_dir}: no song folder in common with reference folder {reference_dir}")

    notes: list[str] = []
    for side, other, only in (
        ("reference", "estimate", set(reference_songs) - set(common)),
        ("estimate", "reference", set(estimate_songs) - set(common)),
    ):
        if only:
            notes.append(
                f"not scored: {', '.join(sorted(only))} ({side} song folders with no {other} folder)"
            )
    ignored = IGNORED_STEMS if metric == names.MUSEVAL_V4 else MIXTURE_STEMS
    scored = _scored_sources(reference_dir, estimate_dir, common, notes, ignored)
    if metric == names.BSS_EVAL_V3:
        result = _bss_result(reference_dir, estimate_dir, common, scored, notes)
    else:
        songs = {
            song: _score_song(reference_dir / song, estimate_dir / song, notes, scored) for song in common
        }
        result = _museval_result(songs, notes)
    result["unscored_songs"] = {
        "reference_only": sorted(set(reference_songs) - set(common)),
        "estimate_only": sorted(set(estimate_songs) - set(common)),
    }
    result["notes"] = notes
    if json_path is not None:
        _write_json_atomic(Path(json_path), result)
    return result


def _museval_result(songs: dict[str, dict], notes: list[str]) -> dict:
    sources = _ordered({source for scores in songs.values() for source in scores})
    exact = [src for src in sources if _median_over_songs(songs, src, "sdr") == math.inf]
    if exact:
        notes.append(
            f"median SDR +inf for {', '.join(exact)}: at least half of the songs have an exact estimate "
            f'("inf" in the JSON)'
        )
    return {
        "metric": METRIC,
        "utterance_metric": UTTERANCE_METRIC,
        "songs": {song: {src: json_safe(v) for src, v in scores.items()} for song, scores in songs.items()},
        "median": {src: json_safe(_median_over_songs(songs, src, "sdr")) for src in sources},
        "median_utterance_sdr": {
            src: json_safe(_median_over_songs(songs, src, "utterance_sdr")) for src in sources
        },
    }


def _bss_result(reference_dir: Path, estimate_dir: Path, common, scored, notes: list[str]) -> dict:
    """BSS Eval v3 of every common song (`sepray.scoring_v3.result` gives the layout)."""
    songs, seconds, mixtures, channels = {}, {}, {}, set()
    for song in common:
        refs, ests, rate, ref_files, est_files = _read_song(
            reference_dir / song, estimate_dir / song, notes, scored
        )
        mixture, mixtures[song] = _mixture(reference_dir / song, refs, rate)
        songs[song] = scoring_v3.song_scores(song, scored, refs, ests, mixture, (ref_files, est_files), notes)
        seconds[song] = refs.shape[-1] / rate
        channels.add(refs.shape[1])
    return scoring_v3.result(songs, seconds, mixtures, channels, notes)


def _mixture(reference_song: Path, refs: torch.Tensor, rate: int) -> tuple[torch.Tensor, str]:
    """The song's mixture for NSDR -> ((channels, time), what it is): ``mixture.wav`` or ``mix.wav`` of the
    reference folder (matching the references' rate, channels and length), else the sum of the references."""
    for stem in MIXTURE_STEMS:
        path = reference_song / f"{stem}.wav"
        if path.is_file():
            mix, mix_rate = read_audio(path)
            if (mix_rate, mix.shape[0], mix.shape[1]) != (rate, refs.shape[1], refs.shape[2]):
                raise ScoringError(
                    f"{path}: {mix_rate} Hz, {mix.shape[0]} channel(s), {mix.shape[1]} samples, but the reference "
                    f"sources have {rate} Hz, {refs.shape[1]} channel(s), {refs.shape[2]} samples"
                )
            return mix, path.name
    return refs.sum(0), scoring_v3.SUMMED


def format_table(result: dict, metric: str = "sdr") -> str:
    """A readable table of `score_folders`' result: one row per song, one column per source, then the median
    row, then the result's notes.

    `metric` is ``"sdr"`` (museval v4 per-song median, the default, with each source's utterance SDR in a
    column beside it) or ``"utterance_sdr"`` alone; the first lines name them.
    """
    if result.get("metric") == scoring_v3.METRIC:
        sources = _ordered({src for scores in result["songs"].values() for src in scores})
        return _render(*scoring_v3.table(result, sources), result["notes"])
    if metric not in _TABLE_METRICS:
        raise ValueError(f"metric must be one of {sorted(_TABLE_METRICS)}, got {metric!r}")
    metrics = [metric, "utterance_sdr"] if metric == "sdr" else [metric]
    titles = [f"{_TABLE_METRICS[metric][0]}, dB"]
    if len(metrics) > 1:
        titles.append(f"'<source> utt': {UTTERANCE_METRIC}, dB")
    sources = _ordered({src for scores in result["songs"].values() for src in scores})
    columns = [(src, m) for src in sources for m in metrics]
    rows = [
        [song] + [_cell(scores.get(src, {}).get(m, "")) for src, m in columns]
        for song, scores in result["songs"].items()
    ]
    rows.append(
        [f"median ({len(result['songs'])} songs)"]
        + [_cell(result[_TABLE_METRICS[m][1]].get(src)) for src, m in columns]
    )
    header = ["song"] + [src if m == metric else f"{src} utt" for src, m in columns]
    return _render(titles, header, rows, result["notes"])


def _render(titles: list[str], header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """Titles, header, one line per song, the summary row (the last of ``rows``), then the notes. Cells after
    the first are numbers (2 decimals), None (``-``) or text."""
    rows = [[row[0]] + [_cell(c) for c in row[1:]] for row in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        )

    rule = "-" * len(line(header))
    body = [line(row) for row in rows[:-1]]
    notes = ["notes:", *(f"  {note}" for note in notes)] if notes else []
    return "\n".join([*titles, line(header), rule, *body, rule, line(rows[-1]), *notes])


def _scored_sources(
    reference_dir: Path, estimate_dir: Path, common: list[str], notes: list[str], ignored=IGNORED_STEMS
) -> list[str]:
    """The sources to score in every common song (see the module docstring); a song missing one is an error."""
    ref_files = {song: _source_files(reference_dir / song, ignored) for song in common}
    est_files = {song: _source_files(estimate_dir / song, ignored) for song in common}
    referenced = set().union(*ref_files.values())
    estimated = set().union(*est_files.values())
    scored = _ordered(referenced & (estimated | set(SOURCES)))
    for song in common:
        if not set(ref_files[song]) & set(est_files[song]):
            raise ScoringError(
                f"{estimate_dir / song}: no <source>.wav in common with reference folder {reference_dir / song} "
                f"(reference has {sorted(ref_files[song]) or 'none'}, "
                f"estimate has {sorted(est_files[song]) or 'none'})"
            )
        for source in scored:
            if source in ref_files[song] and source not in est_files[song]:
                raise ScoringError(
                    f"{estimate_dir / song}: missing {source}.wav (the reference {ref_files[song][source]} exists)"
                )
            if source not in ref_files[song]:
                raise ScoringError(
                    f"{reference_dir / song}: missing {source}.wav (other reference songs have {source}.wav)"
                )
    if referenced - set(scored):
        unscored = ", ".join(_ordered(referenced - set(scored)))
        notes.append(f"not scored: {unscored} (reference sources with no estimate in any song)")
    if estimated - referenced:
        notes.append(
            f"not scored: {', '.join(_ordered(estimated - referenced))} (estimates with no reference)"
        )
    return scored


def _score_song(
    reference_song: Path, estimate_song: Path, notes: list[str], sources: list[str]
) -> dict[str, dict]:
    """Score ``sources`` of one song jointly -> {source: {"sdr", "frames", "utterance_sdr"}} (raw floats)."""
    refs, ests, rate, ref_files, est_files = _read_song(reference_song, estimate_song, notes, sources)
    frames = sdr_frames(refs, ests, rate)  # (S, F)
    medians = median_sdr(frames)  # (S,)
    utterance = utterance_sdr(refs, ests)  # (S,)
    if np.isnan(medians).any():
        notes.append(
            _undefined_sdr_note(estimate_song.name, sources, medians, refs, ests, ref_files, est_files)
        )
    exact = [src for src, m in zip(sources, medians, strict=True) if m == math.inf]
    if exact:
        notes.append(
            f"{estimate_song.name}: SDR +inf for {', '.join(exact)}: the estimate equals the reference exactly "
            f'in at least half of the frames (no error to measure); shown as inf, "inf" in the JSON'
        )
    return {
        source: {"sdr": float(medians[i]), "frames": frames[i].tolist(), "utterance_sdr": float(utterance[i])}
        for i, source in enumerate(sources)
    }


def _read_song(reference_song: Path, estimate_song: Path, notes: list[str], sources: list[str]):
    """Read and check ``sources`` of one song -> (references (S, C, T), estimates (S, C, T), rate, reference
    files, estimate files); estimates zero-padded or truncated to the reference length (with a note)."""
    ref_files = _source_files(reference_song)
    est_files = _source_files(estimate_song)

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

    return torch.stack(references), torch.stack(estimates), rate, ref_files, est_files


def _undefined_sdr_note(song, sources, medians, refs, ests, ref_files, est_files) -> str:
    """Why a song's SDR is undefined ("-"): museval leaves a frame undefined where any reference or estimate
    is silent (sums to zero over channels at every sample), so one silent file blanks every source."""
    silent = [
        str(files[src])
        for files, audio in ((ref_files, refs), (est_files, ests))
        for i, src in enumerate(sources)
        if not audio[i].sum(0).any()
    ]
    blank = ", ".join(src for src, m in zip(sources, medians, strict=True) if math.isnan(m))
    if silent:
        why = f"silent throughout: {', '.join(silent)}"
    else:
        why = "every frame has a silent reference or estimate"
    return f"{song}: SDR undefined ('-') for {blank}: {why} (museval leaves such frames undefined)"


def _check_json_path(path: Path) -> None:
    """Fail before scoring when the JSON cannot be written at ``path`` (one line naming it)."""
    if path.is_dir():
        raise ScoringError(f"{path}: is a directory, expected a path for the JSON file")
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise ScoringError(f"{blocker}: is not a folder, cannot write {path}")


def _song_folders(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise ScoringError(f"{root}: no such folder")
    return {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _source_files(song: Path, ignored=IGNORED_STEMS) -> dict[str, Path]:
    return {
        p.stem: p
        for p in song.iterdir()
        if p.is_file() and p.suffix.lower() == ".wav" and p.stem not in ignored and not p.name.startswith(".")
    }


def _ordered(sources: set[str]) -> list[str]:
    """sepray's sources first (vocals, accompaniment), then the others alphabetically."""
    return [s for s in SOURCES if s in sources] + sorted(sources - set(SOURCES))


def _pad(audio: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(audio, (0, length - audio.shape[1]))


def _median_over_songs(songs: dict[str, dict], source: str, key: str) -> float:
    """Median over songs, skipping NaN (undefined) songs but keeping +inf ones (exact estimates)."""
    values = np.array([scores[source][key] for scores in songs.values() if source in scores], dtype=float)
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else math.nan


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.2f}"


def _write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
