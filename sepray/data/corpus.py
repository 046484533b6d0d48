"""Songs in memory: load song folders (through the audio cache), split a corpus, build the synthetic corpus.

Split rules (deterministic by song name, independent of file order and of other songs' audio):

* CCMixter: songs ordered by ``sha1(name)``; the first ``round(test_fraction * n)`` are test (at least 1 when
  n >= 3 and test_fraction > 0), the next ``round(valid_fraction * n_rest)`` valid (at least 1 when
  n_rest >= 2 and valid_fraction > 0), the rest train. ``round`` rounds halves up.
* MUSDB18-HQ: test = the ``test/`` folder; valid taken from ``train/`` by the same rule; the rest train.

Each split is returned sorted by song name. No training song is a :class:`DatasetError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sepray import audio
from sepray.atomic import folder_written_atomically
from sepray.config import DataConfig
from sepray.data.cache import audio_cache_key, cache_root, file_lock, load_prepared_audio
from sepray.data.domains import label_songs
from sepray.data.layouts import (
    DatasetError,
    SongFiles,
    detect_layout,
    song_files,
    song_folders,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SYNTH_SAMPLE_RATE = 16000
SYNTH_COMPLETE = ".complete"  # marker written last inside a finished synthetic corpus


@dataclass(eq=False)
class Song:
    """One song in memory; every tensor (channels, time) at the loading config's sample rate and channels."""

    name: str
    mix: torch.Tensor  # (C, T)
    sources: dict[str, torch.Tensor]  # {"vocals": (C, T), "accompaniment": (C, T)}
    meta: dict = field(default_factory=dict)  # meta.json contents + folder, layout, sample_rate

    @property
    def length(self) -> int:
        return int(self.mix.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.mix.shape[0])


# Songs already in memory, keyed by their files' cache keys: a second load in this process (another split
# request, the evaluator beside the trainer) reuses them. Weak values: the memo never keeps audio alive.
_memo: weakref.WeakValueDictionary[tuple, Song] = weakref.WeakValueDictionary()


def clear_memo() -> None:
    """Forget the in-process song memo (the on-disk cache stays)."""
    _memo.clear()


def load_song_folder(path: str | os.PathLike, cfg: DataConfig) -> Song:
    """Load one CCMixter or MUSDB18-HQ song folder (``cfg.layout`` or detected from its files)."""
    files = song_files(Path(path).expanduser().resolve(), cfg.layout)
    return _load_song(files, cfg, cache_root(cfg))


def load_splits(cfg: DataConfig) -> dict[str, list[Song]]:
    """``{"train", "valid", "test"}`` lists of songs of ``cfg.path`` (the synthetic corpus when None)."""
    if cfg.path is None:
        if cfg.layout == "musdb":
            raise DatasetError(
                "data.layout is musdb but data.path is empty; the synthetic corpus is CCMixter"
            )
        root, layout = ensure_synthetic_corpus(cfg), "ccmixter"
    else:
        root = Path(cfg.path).expanduser().resolve()
        layout = detect_layout(root, cfg.layout)
    names = split_song_folders(root, layout, cfg)
    cache_dir = cache_root(cfg)
    splits = {
        split: [_load_song(song_files(folder, layout), cfg, cache_dir) for folder in folders]
        for split, folders in names.items()
    }
    for songs in splits.values():
        label_songs(songs, root)  # meta["domain"]: the confusion loss's label (sepray/data/domains.py)
    return splits


def split_song_folders(root: Path, layout: str, cfg: DataConfig) -> dict[str, list[Path]]:
    """Song folders of each split (see the module docstring), before any audio is read."""
    if layout == "musdb":
        pool = song_folders(root / "train")
        test = song_folders(root / "test")
        parts = assign_splits([p.name for p in pool], 0.0, cfg.valid_fraction)
        by_name = {p.name: p for p in pool}
        out = {"train": [by_name[n] for n in parts["train"]], "valid": [by_name[n] for n in parts["valid"]]}
        out["test"] = test
        where = f"{root / 'train'}"
    else:
        pool = song_folders(root)
        parts = assign_splits([p.name for p in pool], cfg.test_fraction, cfg.valid_fraction)
        by_name = {p.name: p for p in pool}
        out = {split: [by_name[n] for n in parts[split]] for split in SPLITS}
        where = str(root)
    if not out["train"]:
        counts = ", ".join(f"{len(out[s])} {s}" for s in ("valid", "test"))
        raise DatasetError(
            f"{where}: no training songs after the split ({len(pool)} songs; {counts}); "
            "add songs or lower data.valid_fraction / data.test_fraction"
        )
    return {split: out[split] for split in SPLITS}


def assign_splits(names: list[str], test_fraction: float, valid_fraction: float) -> dict[str, list[str]]:
    """Deterministic split of song names: ordered by sha1(name), test first, then valid, rest train."""
    ordered = sorted(names, key=lambda n: (hashlib.sha1(n.encode()).hexdigest(), n))
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


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _load_song(files: SongFiles, cfg: DataConfig, cache_dir: Path) -> Song:
    sr, ch = cfg.sample_rate, cfg.channels
    paths = files.audio_files
    memo_key = (files.layout, str(files.folder), tuple(audio_cache_key(p, sr, ch) for p in paths), sr, ch)
    song = _memo.get(memo_key)
    if song is not None:
        return song
    info = {p: audio.audio_info(p) for p in paths}  # (sample_rate, channels, frames)
    ref_sr = info[files.mix][0]
    for p in paths:
        if info[p][0] != ref_sr:
            raise DatasetError(
                f"{p}: sample rate {info[p][0]} Hz differs from {files.mix.name} ({ref_sr} Hz) in the same song"
            )
    frames = {p: info[p][2] for p in paths}
    if len(set(frames.values())) > 1:
        listing = ", ".join(f"{p.name} {n}" for p, n in frames.items())
        log.warning(
            "%s: files differ in length (%s samples at %d Hz); trimming to the shortest",
            files.folder,
            listing,
            ref_sr,
        )
    prepared = {p: load_prepared_audio(p, sr, ch, cache_dir) for p in paths}
    length = min(x.shape[-1] for x in prepared.values())
    mix = prepared[files.mix][:, :length]
    sources = {}
    for name, src_paths in files.sources.items():
        total = prepared[src_paths[0]][:, :length]
        for p in src_paths[1:]:
            total = total + prepared[p][:, :length]
        sources[name] = total
    meta = _read_meta(files.meta) if files.meta else {}
    meta.update(folder=str(files.folder), layout=files.layout, sample_rate=sr)
    song = Song(name=files.name, mix=mix, sources=sources, meta=meta)
    _memo[memo_key] = song
    return song


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read song metadata ({exc}); expected a JSON object") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def synthetic_corpus_params(cfg: DataConfig) -> dict:
    """What identifies a synthetic corpus: its parameters and the generator's version (else a hash of its code)."""
    from sepray.data import synth

    version = getattr(synth, "GENERATOR_VERSION", None)
    code = (
        f"v{version}"
        if version is not None
        else hashlib.sha1(Path(synth.__file__).read_bytes()).hexdigest()[:12]
    )
    return {
        "songs": cfg.synth_songs,
        "seconds": cfg.synth_seconds,
        "seed": cfg.synth_seed,
        "sample_rate": SYNTH_SAMPLE_RATE,
        "generator": code,
    }


def ensure_synthetic_corpus(cfg: DataConfig) -> Path:
    """Generate the synthetic CCMixter corpus once into ``<cache>/synth-<hash>/`` and return that root.

    Safe when several processes ask at once: one generates into a temporary folder under a file lock, writes
    the completion marker, and renames the folder into place; the others wait on the lock and reuse it.
    """
    from sepray.data import synth

    params = synthetic_corpus_params(cfg)
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    cache_dir = cache_root(cfg)
    root = cache_dir / f"synth-{digest}"
    if (root / SYNTH_COMPLETE).is_file():
        return root
    with file_lock(cache_dir / f".synth-{digest}.lock"):
        if (root / SYNTH_COMPLETE).is_file():
            return root
        # a folder left at root by an interrupted run from before the marker existed is replaced
        with folder_written_atomically(root) as tmp:
            log.info("generating the synthetic corpus (%s) into %s", params, root)
            synth.write_corpus(
                tmp, cfg.synth_songs, cfg.synth_seconds, cfg.synth_seed, sample_rate=SYNTH_SAMPLE_RATE
            )
            (tmp / SYNTH_COMPLETE).write_text(json.dumps(params, sort_keys=True) + "\n")
    return root
