"""On-disk cache of decoded, resampled, remixed audio, and the file lock used to build cached corpora.

Layout under the cache root (``DataConfig.cache_dir``, else ``$SEPRAY_CACHE``, else ``~/.cache/sepray``)::

    audio/<kk>/<key>.npy        one prepared file, float32 (channels, time); key = sha1 of
                                (format, absolute path, size, mtime_ns, sample_rate, channels[, selector]);
                                the selector names a stream / channel of the file (a .stem.mp4 stream, a
                                MIR-1K channel), absent for a whole WAV file
    synth-<hash>/               the synthetic corpus (see corpus.ensure_synthetic_corpus)

    audio/<kk>/<key>.npy        also: the sum of several prepared files (a MUSDB accompaniment = drums + bass
                                + other, a MIR-1K mixture = left + right), key = sha1 of their keys + length
    remote/<uri>-<listing>/     a remote dataset root copied to this node (see remote.py)

Every file is written to a temporary name and renamed, so readers never see a partial file.

Songs share memory: a prepared array is memory-mapped from its cache file (``np.load(mmap_mode="c")``,
``torch.from_numpy`` without a copy), so the trials on one node read one copy of each song from the page cache
instead of each holding its own. The mapping is copy-on-write: the tensors are writable (torch needs that), and a
write would only make a private copy of the page it touches, never change the file; nothing in sepray writes into
a song's tensors (the crop sampler and augmentation copy; ``tests/data/test_shared_songs.py`` checks that no page
of a mapping is made private).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from sepray import audio, dsp
from sepray.atomic import file_written_atomically
from sepray.config import DataConfig
from sepray.data.layouts import Part

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the preparation (resampling, remixing) changes
MMAP_MODE: str | None = "c"  # how cached arrays are opened: copy-on-write mapped; None reads them into memory
_warned_unwritable: set[str] = set()


def cache_root(cfg: DataConfig) -> Path:
    """The cache root: ``cfg.cache_dir``, else ``$SEPRAY_CACHE``, else ``~/.cache/sepray``."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser().resolve()
    env = os.environ.get("SEPRAY_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "sepray"


def audio_cache_key(path: Path, sample_rate: int, channels: int, selector: str | None = None) -> str:
    """Key of one prepared file (or ``selector``: a stream / channel of it): changes when the file's path, size
    or mtime changes, or the target format."""
    path = Path(path).resolve()
    st = path.stat()
    fields = [CACHE_FORMAT, str(path), st.st_size, st.st_mtime_ns, int(sample_rate), int(channels)]
    if selector is not None:  # whole files keep the key they had before parts existed
        fields.append(selector)
    return hashlib.sha1(json.dumps(fields).encode()).hexdigest()


def part_cache_key(part: Part, sample_rate: int, channels: int) -> str:
    return audio_cache_key(part.path, sample_rate, channels, part.selector)


def cached_audio_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "audio" / key[:2] / f"{key}.npy"


def prepare_audio(x: torch.Tensor, orig_sr: int, sample_rate: int, channels: int) -> torch.Tensor:
    """(C, T) at ``orig_sr`` -> (channels, T') at ``sample_rate`` (downmix before resampling: fewer rows)."""
    if x.shape[0] > channels:
        return dsp.resample(dsp.remix(x, channels), orig_sr, sample_rate).contiguous()
    return dsp.remix(dsp.resample(x, orig_sr, sample_rate), channels).contiguous()


def read_cached(cache_dir: Path, key: str, channels: int) -> torch.Tensor | None:
    """The prepared (channels, time) array of ``key``, or None when it is missing or unreadable."""
    cached = cached_audio_path(cache_dir, key)
    if not cached.is_file():
        return None
    try:
        array = np.load(cached, mmap_mode=MMAP_MODE, allow_pickle=False)
        if array.ndim == 2 and array.shape[0] == channels and array.dtype == np.float32:
            return torch.from_numpy(array)  # shares the mapping (see the module docstring)
    except (OSError, ValueError, EOFError):
        pass
    log.warning("%s: unreadable cache entry, decoding its audio again", cached)
    return None


def load_prepared_audio(path: Path, sample_rate: int, channels: int, cache_dir: Path) -> torch.Tensor:
    """Decode ``path`` to (channels, time) float32 at ``sample_rate``, through the on-disk cache."""
    return load_prepared_parts([Part(Path(path))], sample_rate, channels, cache_dir)[0]


def load_prepared_parts(
    parts: Sequence[Part],
    sample_rate: int,
    channels: int,
    cache_dir: Path,
    before_decoding: Callable[[], None] | None = None,
) -> list[torch.Tensor]:
    """Each part (a stream, one channel or all, of a file) as (channels, time) float32 at ``sample_rate``.

    Parts found in the on-disk cache are read from it; the others are decoded, each audio stream of a file once
    (the two channels of a MIR-1K clip: one read), prepared, and cached. ``before_decoding`` is called once
    before the first decode (the caller's checks of the files), never when everything is cached.
    """
    keys = [part_cache_key(p, sample_rate, channels) for p in parts]
    out: list[torch.Tensor | None] = [read_cached(cache_dir, k, channels) for k in keys]
    missing: dict[tuple[Path, int], list[int]] = {}  # (file, stream) -> parts to make from it
    for i, part in enumerate(parts):
        if out[i] is None:
            missing.setdefault((part.path, part.stream), []).append(i)
    if missing and before_decoding is not None:
        before_decoding()
    with one_torch_thread():
        for (path, stream), indices in missing.items():  # one stream in memory at a time
            x, sr = audio.read_stream(path, stream)
            for i in indices:
                channel = parts[i].channel
                try:
                    out[i] = prepare_audio(
                        x if channel is None else x[channel : channel + 1], sr, sample_rate, channels
                    )
                except ValueError as exc:
                    raise audio.AudioError(f"{path}: {exc}") from None
                if _save_npy(cached_audio_path(cache_dir, keys[i]), out[i]):
                    out[i] = _mapped(cache_dir, keys[i], channels, out[i])
    return out


def cached_sum(
    cache_dir: Path, keys: Sequence[str], arrays: Sequence[torch.Tensor], length: int, channels: int
) -> torch.Tensor:
    """``sum(a[:, :length] for a in arrays)`` (float32, summed in order), through the cache: each process that
    needs it maps one shared file instead of holding its own sum. ``keys`` are the arrays' cache keys."""
    fields = ["sum", CACHE_FORMAT, list(keys), int(length)]
    key = hashlib.sha1(json.dumps(fields).encode()).hexdigest()
    found = read_cached(cache_dir, key, channels)
    if found is not None and found.shape[-1] == length:
        return found
    # summed in numpy (one thread: torch's threads made a MIR-1K corpus's second load 18 s slower on a loaded
    # 2-core machine)
    summed = arrays[0][:, :length].numpy().copy()
    for x in arrays[1:]:
        summed += x[:, :length].numpy()
    total = torch.from_numpy(summed)
    if _save_npy(cached_audio_path(cache_dir, key), total):
        return _mapped(cache_dir, key, channels, total)
    return total


def _mapped(cache_dir: Path, key: str, channels: int, fallback: torch.Tensor) -> torch.Tensor:
    """The cache file just written for ``key``, mapped (the same values as ``fallback``, which is freed)."""
    mapped = read_cached(cache_dir, key, channels)
    return fallback if mapped is None else mapped


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block on one torch thread (then restore the count): resampling one clip at a time gains nothing
    from more, and on a loaded machine their hand-offs made it ~10x slower (measured: 8 s clip 16 -> 8 kHz,
    74 ms on 2 threads, 8 ms on 1, on this 2-core machine at load 8). Results are the same."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _save_npy(path: Path, x: torch.Tensor) -> bool:
    """Write atomically; a cache that cannot be written only costs speed and memory (one warning per folder).
    True when written."""
    try:
        with file_written_atomically(path, suffix=".npy.tmp") as tmp, open(tmp, "wb") as fh:
            np.save(fh, x.numpy(), allow_pickle=False)
        return True
    except OSError as exc:
        if str(path.parent) not in _warned_unwritable:
            _warned_unwritable.add(str(path.parent))
            log.warning("%s: cannot write the audio cache (%s); decoding every time", path.parent, exc)
        return False


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (fcntl.flock) held for the ``with`` block; works across processes and threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
