"""Train / valid / test splits of one corpus, before any audio is read (``data.split`` or a root's ``split``).

* ``auto`` (deterministic by name, independent of file order and of other songs' audio):

  - CCMixter: songs ordered by ``sha1(name)``; the first ``round(test_fraction * n)`` are test (at least 1 when
    n >= 3 and test_fraction > 0), the next ``round(valid_fraction * n_rest)`` valid (at least 1 when
    n_rest >= 2 and valid_fraction > 0), the rest train. ``round`` rounds halves up.
  - MUSDB18-HQ and MUSDB18 (.stem.mp4): test = the ``test/`` folder; valid taken from ``train/`` by the same rule.
  - MIR-1K / iKala: the same rule over *singers* (every clip of a singer in one split), so no singer is in two
    splits.
* ``mir1k-standard`` (MIR-1K only; Huang et al. 2014, Park et al. 2018): train on the 175 clips of ``abjones``
  and ``amy``, test on the other 825 clips (17 singers). Validation: whole songs (``<singer>_<song>``) of the
  training singers, each singer's songs in ``sha1`` order until ``round(valid_fraction * its clips)`` clips are
  reached (at least one song each when valid_fraction > 0, never its last song): on MIR-1K 31 clips (4 songs)
  at the default 0.15, 24 (3 songs) at 0.1. Validation shares singers with training by design (there are only two); test shares none.
* a split file (``.yaml`` / ``.yml`` / ``.json``): ``{train: [...], valid: [...], test: [...]}`` of song names
  (a folder name, a clip's file name without ``.wav``, a track's name without ``.stem.mp4``); ``train`` is
  required, ``valid`` / ``test`` may be left out or empty. A name the corpus does not have, or one listed twice,
  is an error naming the file and the song; songs the file does not list are not used. With singers (MIR-1K /
  iKala), a test singer who also sings in train or valid is a warning line naming them (papers that split
  iKala by clip do so), not an error.

Each split is returned sorted by song name. No training song is a :class:`DatasetError`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from sepray.config import DataConfig
from sepray.data.layouts import DatasetError, SongFiles
from sepray.schema import load_yaml

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MIR1K_TRAIN_SINGERS = ("abjones", "amy")


def split_songs(
    songs: Sequence[SongFiles], layout: str, split: str, cfg: DataConfig, where: Path
) -> dict[str, list[SongFiles]]:
    """``{"train", "valid", "test"}`` songs of one corpus folder ``where`` (see the module docstring)."""
    if split == "auto":
        out = _auto_split(songs, layout, cfg)
    elif split == "mir1k-standard":
        out = _mir1k_standard(songs, layout, cfg, where)
    else:
        out = _file_split(songs, Path(split).expanduser(), layout)
    if not out["train"]:
        counts = ", ".join(f"{len(out[s])} {s}" for s in ("valid", "test"))
        pool = f"{where / 'train'}" if layout.startswith("musdb") and split == "auto" else f"{where}"
        raise DatasetError(
            f"{pool}: no training songs after the split ({len(songs)} songs; {counts}); "
            "add songs or lower data.valid_fraction / data.test_fraction"
        )
    return {name: sorted(out[name], key=lambda s: s.name) for name in SPLITS}


def assign_splits(names: list[str], test_fraction: float, valid_fraction: float) -> dict[str, list[str]]:
    """Deterministic split of song names: ordered by sha1(name), test first, then valid, rest train."""
    ordered = sorted(names, key=_hash_order)
    n = len(ordered)
    n_test = _round_half_up(test_fraction * n)
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    n_rest = n - n_test
    n_valid = _round_half_up(valid_fraction * n_rest)
    if valid_fraction > 0 and n_rest >= 2:
        n_valid = max(n_valid, 1)
    test, valid, train = ordered[:n_test], ordered[n_test : n_test + n_valid], ordered[n_test + n_valid :]
    return {"train": sorted(train), "valid": sorted(valid), "test": sorted(test)}


def _hash_order(name: str) -> tuple[str, str]:
    return hashlib.sha1(name.encode()).hexdigest(), name


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _auto_split(songs: Sequence[SongFiles], layout: str, cfg: DataConfig) -> dict[str, list[SongFiles]]:
    if layout in ("musdb", "musdb-stems"):
        pool = [s for s in songs if s.subset == "train"]
        parts = assign_splits([s.name for s in pool], 0.0, cfg.valid_fraction)
        out = _pick(pool, parts, key=lambda s: s.name)
        out["test"] = [s for s in songs if s.subset == "test"]
        return out
    if layout == "mir1k":
        parts = assign_splits(sorted({_singer(s) for s in songs}), cfg.test_fraction, cfg.valid_fraction)
        return _pick(songs, parts, key=_singer)
    parts = assign_splits([s.name for s in songs], cfg.test_fraction, cfg.valid_fraction)
    return _pick(songs, parts, key=lambda s: s.name)


def _pick(songs, parts: dict[str, list[str]], key) -> dict[str, list[SongFiles]]:
    where = {name: split for split, names in parts.items() for name in names}
    out: dict[str, list[SongFiles]] = {split: [] for split in SPLITS}
    for song in songs:
        out[where[key(song)]].append(song)
    return out


def _singer(song: SongFiles) -> str:
    return song.info["singer"]


def _mir1k_standard(
    songs: Sequence[SongFiles], layout: str, cfg: DataConfig, where: Path
) -> dict[str, list[SongFiles]]:
    if layout != "mir1k":
        raise DatasetError(
            f"{where}: data.split mir1k-standard needs the MIR-1K layout, this root is {layout}"
        )
    train = [s for s in songs if _singer(s) in MIR1K_TRAIN_SINGERS]
    missing = [name for name in MIR1K_TRAIN_SINGERS if not any(_singer(s) == name for s in train)]
    if missing:
        raise DatasetError(
            f"{where}: data.split mir1k-standard trains on the clips of {' and '.join(MIR1K_TRAIN_SINGERS)}, "
            f"but there is no clip of {', '.join(missing)} (expected files named {missing[0]}_<song>_<clip>.wav)"
        )
    valid_songs: set[str] = set()
    for singer in MIR1K_TRAIN_SINGERS:
        clips = [s for s in train if _singer(s) == singer]
        by_song: dict[str, int] = {}
        for clip in clips:
            by_song[_song_id(clip.name)] = by_song.get(_song_id(clip.name), 0) + 1
        target = _round_half_up(cfg.valid_fraction * len(clips))
        if cfg.valid_fraction > 0:
            target = max(target, 1)
        taken = 0
        for song_id in sorted(by_song, key=_hash_order)[: max(len(by_song) - 1, 0)]:
            if taken >= target:
                break
            valid_songs.add(song_id)
            taken += by_song[song_id]
    valid = [s for s in train if _song_id(s.name) in valid_songs]
    return {
        "train": [s for s in train if _song_id(s.name) not in valid_songs],
        "valid": valid,
        "test": [s for s in songs if _singer(s) not in MIR1K_TRAIN_SINGERS],
    }


def _song_id(clip_name: str) -> str:
    """``abjones_2_07`` -> ``abjones_2``: the clip name without its last ``_`` part (the clip number)."""
    head, sep, _ = clip_name.rpartition("_")
    return head if sep else clip_name


def read_split_file(path: Path) -> dict[str, list[str]]:
    """``{split: [song names]}`` of a split file; DatasetError naming the file for a malformed one."""
    if not path.is_file():
        raise DatasetError(
            f"{path}: no such split file; expected a YAML or JSON {{train: [...], valid: [...], test: [...]}}"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the split file ({str(exc).splitlines()[0]})") from None
    raw = load_yaml(text, str(path), DatasetError)  # JSON is YAML; malformed: FILE: line L, column C: ...
    if not isinstance(raw, dict) or "train" not in raw:
        raise DatasetError(
            f"{path}: expected a mapping {{train: [...], valid: [...], test: [...]}} of song names"
        )
    out: dict[str, list[str]] = {}
    for key, names in raw.items():
        if key not in SPLITS:
            raise DatasetError(f"{path}: unknown split {key!r}; expected train, valid, test")
        if names is None:
            names = []
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise DatasetError(f"{path}: {key}: expected a list of song names")
        out[key] = [str(n) for n in names]
    return out


def _file_split(songs: Sequence[SongFiles], path: Path, layout: str) -> dict[str, list[SongFiles]]:
    listed = read_split_file(path)
    by_name = {s.name: s for s in songs}
    seen: dict[str, str] = {}
    out: dict[str, list[SongFiles]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for name in listed.get(split, []):
            if name not in by_name:
                raise DatasetError(
                    f"{path}: {split}: song {name!r} is not in the corpus ({len(by_name)} songs)"
                )
            if name in seen:
                raise DatasetError(f"{path}: song {name!r} is listed in {seen[name]} and {split}")
            seen[name] = split
            out[split].append(by_name[name])
    unused = len(songs) - len(seen)
    if unused:
        log.info("%s: %d songs of the corpus are in no split and are not used", path, unused)
    if layout == "mir1k":
        test_singers = {_singer(s) for s in out["test"]}
        shared = sorted(test_singers & {_singer(s) for s in out["train"] + out["valid"]})
        if shared:
            log.warning(
                "%s: singers %s are in the test split and in train/valid; test scores then measure known voices",
                path,
                ", ".join(shared),
            )
    return out
