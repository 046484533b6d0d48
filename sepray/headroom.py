"""Songs beyond full scale: separated at a level the models know, written without clipping.

Every model's ``decode`` clamps its estimates to [-1, 1] (the range it was trained on). A float WAV may hold any
value: one peaking at 4.0 used to come out 16-bit with 35 % of its accompaniment clipped at 1.0 (issue 17's
probe), and vocals + accompaniment no longer added up to the mixture. :func:`level_of` scans such an input once for its peak; above
full scale the model is given the song at ``1 / peak`` of its level (:class:`ScaledReader`) and
:meth:`Level.restore` scales the estimates back, so nothing is clamped and the estimates still sum to the
mixture (for the models whose estimates do). Float inputs are written as float files (any value); see
:func:`write_unclipped` for estimates of a PCM input that exceed full scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from sepray.audio import AudioReader, AudioWriter


class BlockReader(Protocol):
    """What :func:`sepray.separate.separate_stream` reads from: :class:`sepray.audio.AudioReader`,
    :class:`ScaledReader` or an equivalent."""

    samplerate: int
    channels: int
    frames: int

    def read(self, start: int, stop: int) -> torch.Tensor: ...


class ScaledReader:
    """A block reader (``samplerate``, ``channels``, ``frames``, ``read(start, stop)``) giving another reader's
    samples times ``gain``."""

    def __init__(self, reader: AudioReader, gain: float) -> None:
        self.reader, self.gain = reader, gain
        self.samplerate, self.channels, self.frames = reader.samplerate, reader.channels, reader.frames

    def read(self, start: int, stop: int) -> torch.Tensor:
        """(channels, stop - start), zeros outside the file."""
        return self.reader.read(start, stop) * self.gain


@dataclass(frozen=True)
class Level:
    """How a song is fed to the model and written: ``reader`` gives the model's input; ``peak`` is the input's
    largest absolute sample when it was scanned (float inputs), else None; ``subtype`` the output files'."""

    reader: AudioReader | ScaledReader
    peak: float | None
    subtype: str

    @property
    def scaled(self) -> bool:
        return isinstance(self.reader, ScaledReader)

    def restore(self, block: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Estimates at the model's level -> at the song's level: {source: (channels, n)}."""
        if not self.scaled:
            return block
        return {name: audio / self.reader.gain for name, audio in block.items()}

    def note(self, path) -> str | None:
        """The line telling the user the song was scaled, or None."""
        if not self.scaled:
            return None
        return (
            f"{path}: peaks at {self.peak:.2f}, beyond full scale: separated at 1/{self.peak:.2f} of its level "
            "and scaled back (32-bit float WAVs, nothing clipped)"
        )


def level_of(reader: AudioReader) -> Level:
    """The level plan of an open input: PCM inputs (never beyond full scale) as they are, written as 16-bit
    PCM; float inputs as float files, scanned once (a NaN / inf sample fails here, before anything is written)
    and scaled to full scale when they exceed it."""
    if not reader.is_float:
        return Level(reader, None, "PCM_16")
    peak = reader.peak()
    return Level(ScaledReader(reader, 1.0 / peak) if peak > 1.0 else reader, peak, "FLOAT")


def write_unclipped(writers: dict[str, AudioWriter], blocks: dict[str, torch.Tensor]) -> float | None:
    """Append ``blocks[name]`` (channels, time) to ``writers[name]``; when a PCM file would clip one (a sample
    beyond [-1, 1]), every writer first switches to float (:meth:`AudioWriter.to_float`), so that nothing is
    clipped and sources that sum to a mixture still do. Returns the peak that made them switch, else None."""
    switched = None
    if not all(w.is_float for w in writers.values()):
        peak = max((float(blocks[name].abs().max()) for name in writers if blocks[name].numel()), default=0.0)
        if peak > 1.0:
            for writer in writers.values():
                writer.to_float()
            switched = peak
    for name, writer in writers.items():
        writer.write(blocks[name])
    return switched
