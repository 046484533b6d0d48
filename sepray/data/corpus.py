"""Songs in memory: load the songs of one or several corpora (through the audio cache), split them, build the
synthetic corpus.

``data.path`` names one dataset root, ``null`` (the synthetic corpus) or a list of roots (``DataConfig.corpora``),
each with its layout, split (:mod:`sepray.data.splits`) and sampling weight. Every corpus is split on its own;
the splits are then pooled: ``train`` holds every corpus's training songs (the crop sampler draws from each
corpus by its weight, :mod:`sepray.data.sampler`), ``valid`` and ``test`` every corpus's, or only those of
``data.eval_corpus`` when it is set. Songs carry ``meta["corpus"]``; with several corpora their names are
``<corpus>/<song>`` so that names never collide. All audio is prepared to ``data.sample_rate`` /
``data.channels`` (mono sources repeated to stereo, stereo averaged to mono), whatever its corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sepray import audio
from sepray.atomic import folder_written_atomically
from sepray.config import CorpusConfig, DataConfig
from sepray.data.cache import cache_root, cached_sum, file_lock, load_prepared_parts, part_cache_key
from sepray.data.domains import label_songs
from sepray.data.layouts import DatasetError, SongFiles, find_corpus, list_songs, song_files
from sepray.data.remote import is_remote, local_root
from sepray.data.splits import SPLITS, split_songs

log = logging.getLogger(__name__)

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
    """Load one song: a CCMixter or MUSDB18-HQ song folder, a MUSDB18 ``.stem.mp4`` or a MIR-1K / iKala clip
    (``cfg.layout`` or detected from its files)."""
    files = song_files(Path(path).expanduser().resolve(), cfg.layout)
    return _load_song(files, cfg, cache_root(cfg))


@dataclass
class CorpusPlan:
    """One corpus of ``data.path``, found and split, before any audio is read."""

    config: CorpusConfig
    root: Path  # the folder holding its songs
    layout: str
    splits: dict[str, list[SongFiles]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.corpus_name


def plan_corpora(cfg: DataConfig, log_line=None) -> list[CorpusPlan]:
    """Find, list and split every corpus of ``cfg`` (generating the synthetic corpus if it is one of them,
    copying a remote root to this node: :mod:`sepray.data.remote`)."""
    plans = []
    for corpus in cfg.corpora():
        if corpus.is_synthetic:
            if corpus.layout not in ("auto", "ccmixter"):
                raise DatasetError(
                    f"data.layout is {corpus.layout} but the corpus is the synthetic one (data.path empty or "
                    "'synthetic'), which is CCMixter"
                )
            root, layout = ensure_synthetic_corpus(cfg), "ccmixter"
        else:
            root, layout = _find_root(corpus, cache_root(cfg), log_line)
        plan = CorpusPlan(corpus, root, layout)
        plan.splits = split_songs(list_songs(root, layout), layout, corpus.split, cfg, root)
        plans.append(plan)
    return plans


def _find_root(corpus: CorpusConfig, cache_dir: Path, log_line=None) -> tuple[Path, str]:
    """(local folder of its songs, layout) of a dataset root; errors about a remote root's copy name its URI."""
    local = local_root(corpus.path, cache_dir, log_line)
    try:
        return find_corpus(local, corpus.layout)
    except DatasetError as exc:
        if not is_remote(corpus.path):
            raise
        raise DatasetError(str(exc).replace(str(local.resolve()), corpus.path.rstrip("/"))) from None


def load_splits(cfg: DataConfig, which: Sequence[str] = SPLITS) -> dict[str, list[Song]]:
    """``{split: songs}`` for each split in ``which`` of ``cfg``'s corpora (see the module docstring).

    Only the splits asked for are read (the trainer asks for train and valid).
    """
    unknown = [w for w in which if w not in SPLITS]
    if unknown:
        raise ValueError(f"load_splits: unknown split {unknown[0]!r}; expected {SPLITS}")
    plans = plan_corpora(cfg)
    several = len(plans) > 1
    cache_dir = cache_root(cfg)
    out: dict[str, list[Song]] = {split: [] for split in which}
    for plan in plans:
        for split in which:
            if split != "train" and cfg.eval_corpus is not None and plan.name != cfg.eval_corpus:
                continue
            files = plan.splits[split]
            songs = [_load_song(f, cfg, cache_dir, plan.name, several) for f in files]
            # meta["domain"]: the confusion loss's label (sepray/data/domains.py)
            label_songs(songs, plan.root, [f.name for f in files])
            out[split].extend(songs)
    return out


def prepare_corpora(cfg: DataConfig, log_line=None) -> int:
    """Generate the synthetic corpus and decode every song of every corpus into the audio cache, without
    keeping audio in memory (a sweep's driver does this once, so its trials do not decode at the same time).
    Returns the number of songs."""
    cache_dir = cache_root(cfg)
    count = 0
    plans = plan_corpora(cfg, log_line)
    for plan in plans:
        songs = [f for split in SPLITS for f in plan.splits[split]]
        if log_line is not None and not plan.config.is_synthetic:
            log_line(
                f"data: {plan.name}: {len(songs)} songs ({plan.layout}, split {plan.config.split}) in {plan.root}"
            )
        for files in songs:  # decoded, summed and cached; the memory-mapped song is dropped at once
            _load_song(files, cfg, cache_dir, plan.name, len(plans) > 1)
        count += len(songs)
    return count


def _distinct_parts(files: SongFiles):
    return tuple(dict.fromkeys(files.parts))


def _load_song(
    files: SongFiles, cfg: DataConfig, cache_dir: Path, corpus: str | None = None, prefix=False
) -> Song:
    sr, ch = cfg.sample_rate, cfg.channels
    parts = _distinct_parts(files)
    name = f"{corpus}/{files.name}" if prefix and corpus else files.name
    memo_key = (
        files.layout,
        str(files.folder),
        tuple(part_cache_key(p, sr, ch) for p in parts),
        sr,
        ch,
        name,
    )
    song = _memo.get(memo_key)
    if song is not None:
        if corpus is not None:  # a song first loaded on its own (load_song_folder) joins its corpus
            song.meta.setdefault("corpus", corpus)
        return song
    # the files are probed only when something must be decoded: a cached song reads no audio file
    decoded = load_prepared_parts(parts, sr, ch, cache_dir, before_decoding=lambda: _check_files(files))
    prepared = dict(zip(parts, decoded, strict=True))
    length = min(x.shape[-1] for x in prepared.values())

    def total(group) -> torch.Tensor:
        """The sum of ``group``'s parts, trimmed to ``length`` (memory-mapped views of the cache, one cached file
        for a sum of several parts)."""
        if len(group) == 1:
            return prepared[group[0]][:, :length]
        keys = [part_cache_key(p, sr, ch) for p in group]
        return cached_sum(cache_dir, keys, [prepared[p] for p in group], length, ch)

    mix = total(files.mix)
    sources = {name: total(group) for name, group in files.sources.items()}
    meta = _read_meta(files.meta) if files.meta else {}
    meta.update(files.info)
    meta.update(folder=str(files.folder), layout=files.layout, sample_rate=sr)
    if corpus is not None:
        meta["corpus"] = corpus
    song = Song(name=name, mix=mix, sources=sources, meta=meta)
    _memo[memo_key] = song
    return song


def _check_files(files: SongFiles) -> None:
    """Before decoding: every file exists and has the streams / channels its parts take, the files of a song
    share one sample rate (DatasetError naming the file); files that differ in length are trimmed to the
    shortest (a warning)."""
    info = {path: audio.probe(path) for path in files.audio_files}
    for part in files.parts:
        found = info[part.path]
        if part.stream >= found.streams:
            raise DatasetError(
                f"{part.path}: {found.streams} audio stream(s); a {files.layout} song file needs "
                f"{part.stream + 1} or more (MUSDB18: mixture, drums, bass, other, vocals)"
            )
        if part.channel is not None and part.channel >= found.channels:
            raise DatasetError(
                f"{part.path}: {found.channels} channel(s); a {files.layout} clip is a stereo WAV "
                "(left = accompaniment, right = vocals)"
            )
    paths = files.audio_files
    ref_sr = info[paths[0]].sample_rate
    for p in paths:
        if info[p].sample_rate != ref_sr:
            raise DatasetError(
                f"{p}: sample rate {info[p].sample_rate} Hz differs from {paths[0].name} ({ref_sr} Hz) in the same song"
            )
    frames = {p: info[p].frames for p in paths}
    if len(set(frames.values())) > 1:
        listing = ", ".join(f"{p.name} {n}" for p, n in frames.items())
        log.warning(
            "%s: files differ in length (%s samples at %d Hz); trimming to the shortest",
            files.folder,
            listing,
            ref_sr,
        )


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
