"""The only module that reads and writes audio files (soundfile).

Audio in memory is a float32 tensor of shape (channels, time) in [-1, 1].
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file."""


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) of an audio file, without decoding it."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError / LibsndfileError / TypeError
        raise AudioError(f"{path}: cannot read audio ({_short(exc)})") from None
    return info.samplerate, info.channels, info.frames


def read_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode an audio file -> (tensor (channels, time) float32, sample_rate).

    Raises AudioError (one line naming the file) when the file is missing, unreadable or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot read audio ({_short(exc)}); expected a WAV/FLAC/OGG file") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio file (0 samples)")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)


def write_audio(
    path: str | os.PathLike, audio: torch.Tensor, sample_rate: int, subtype: str = "PCM_16"
) -> None:
    """Write (channels, time) audio atomically (temp file + rename), clipping to [-1, 1]."""
    path = Path(path)
    if audio.dim() != 2:
        raise ValueError(f"expected audio of shape (channels, time), got {tuple(audio.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = audio.detach().to("cpu", torch.float32).clamp(-1.0, 1.0).numpy().T
    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix=".tmp-", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, subtype=subtype, format="WAV")
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
