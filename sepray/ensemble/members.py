"""A loaded ensemble separates songs: each member at its own sample rate, as it separates alone, the estimates
combined by :func:`sepray.ensemble.weights.combine` (so they sum to the mixture).

* In memory (``sepray evaluate``, the sweep's validation fit and test stage): :meth:`Ensemble.separate_song`.
  A member at the song's rate separates it as :func:`sepray.separate.separate_tensor` does in its own evaluation
  (so a sweep reuses its members' test estimates exactly); a member at another rate as
  :func:`sepray.separate.separate_song` does (resampled to its rate and back, full band).
* Files (``sepray separate``): :meth:`Ensemble.file_stream` is the hook :func:`sepray.separate.separate_file`
  streams an ensemble through: every member streams the file (:func:`sepray.separate.separate_stream`: own rate,
  own chunks, resampled back to the file's rate, full band) and the blocks are combined as they line up. Memory
  stays bounded: the members are read in step (the one furthest behind goes next), so only the gap between
  them (about one chunk) is held.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import torch
from tqdm import tqdm

from sepray import SOURCES, dsp
from sepray.device import generation_threads, torch_threads
from sepray.ensemble.package import EnsembleConfig
from sepray.ensemble.weights import combine
from sepray.headroom import BlockReader
from sepray.models import Separator
from sepray.package import PackageInfo
from sepray.separate import count_chunks, separate_song, separate_stream, separate_tensor

Member = tuple[Separator, PackageInfo]


def member_estimate(
    member: Member, mix: torch.Tensor, rate: int, chunk_seconds: float, device: torch.device | str
) -> dict[str, torch.Tensor]:
    """One member's estimates of a song held in memory at ``rate``: mix (C, T) -> {source: (C, T)}."""
    model, info = member
    if info.sample_rate == rate:
        return separate_tensor(model, mix, chunk_seconds, rate, device)
    return separate_song(model, mix, rate, info.sample_rate, chunk_seconds, device)


class Ensemble:
    """An ensemble loaded for separation: ``members`` (model, PackageInfo) on one device and its ``config``
    (weights, the rate it is evaluated at). ``chunk_seconds`` (one per member, seconds of output per model call
    at its rate) overrides the one length :meth:`file_stream` is given, e.g. each member's memory budget."""

    def __init__(self, config: EnsembleConfig, members: list[Member]) -> None:
        if len(members) != len(config.members):
            raise ValueError(f"{len(members)} loaded members for {len(config.members)} in the config")
        self.config = config
        self.members = members
        self.chunk_seconds: tuple[float, ...] | None = None

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def weights(self) -> tuple[float, ...]:
        return self.config.weights

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for model, _ in self.members for p in model.parameters())

    def separate_song(
        self,
        mix: torch.Tensor,
        rate: int,
        chunk_seconds: float = 10.0,
        device: torch.device | str = "cpu",
        known: list[dict[str, torch.Tensor] | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """A song held in memory at ``rate``: mix (C, T) -> {source: (C, T)}. ``known[i]``, when given, is member
        i's estimate of this song already computed (e.g. in its own evaluation), used instead of separating."""
        known = known or [None] * len(self.members)
        estimates = [
            est if est is not None else member_estimate(member, mix, rate, chunk_seconds, device)
            for member, est in zip(self.members, known, strict=True)
        ]
        return combine(estimates, self.weights, mix)

    @contextlib.contextmanager
    def file_stream(
        self,
        reader: BlockReader,
        chunk_seconds: float,
        device: torch.device | str,
        name: str,
        show_progress: bool = True,
    ) -> Iterator[Callable[[BlockReader], Iterator[dict[str, torch.Tensor]]]]:
        """What :func:`sepray.separate.separate_file` separates a file with: yields ``stream(reader)`` ->
        :meth:`stream`'s blocks, with one progress bar counting every member's model calls."""
        chunks = self.chunk_seconds or (chunk_seconds,) * len(self.members)
        total = sum(
            count_chunks(
                model,
                dsp.resampled_length(reader.frames, reader.samplerate, info.sample_rate),
                max(1, round(seconds * info.sample_rate)),
            )
            for (model, info), seconds in zip(self.members, chunks, strict=True)
        )
        bar = tqdm(total=total, desc=name, unit="chunk", file=sys.stderr, disable=not show_progress)
        try:
            yield lambda block_reader: self.stream(block_reader, chunks, device, bar.update)
        finally:
            bar.close()

    @torch.no_grad()
    def stream(
        self,
        reader: BlockReader,
        chunk_seconds: tuple[float, ...],
        device: torch.device | str = "cpu",
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Separate a song block by block at the reader's rate: yields {source: (channels, n)} in order, the
        blocks together ``reader.frames`` samples long; each member streams at its own rate and chunk length."""
        streams = [
            separate_stream(model, reader, info.sample_rate, seconds, device, progress)
            for (model, info), seconds in zip(self.members, chunk_seconds, strict=True)
        ]
        threads = [generation_threads(model, torch.device(device)) for model, _ in self.members]
        held = [torch.zeros(len(SOURCES), reader.channels, 0) for _ in streams]  # (S, C, n) per member
        pending, done = set(range(len(streams))), 0
        while pending:
            i = min(pending, key=lambda k: (held[k].shape[-1], k))  # the member furthest behind goes next
            try:
                with torch_threads(threads[i]):
                    block = next(streams[i])
            except StopIteration:
                pending.discard(i)
                continue
            held[i] = torch.cat([held[i], torch.stack([block[s] for s in SOURCES])], dim=-1)
            n = min(h.shape[-1] for h in held)
            if n:
                estimates = [{s: h[j, :, :n] for j, s in enumerate(SOURCES)} for h in held]
                yield combine(estimates, self.weights, reader.read(done, done + n))
                held, done = [h[..., n:] for h in held], done + n
        if done != reader.frames or any(h.shape[-1] for h in held):
            raise AssertionError(f"the members streamed {done} samples of {reader.frames}")


def separate_any(
    model: Separator | Ensemble,
    mix: torch.Tensor,
    chunk_seconds: float,
    rate: int,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """A song in memory at ``rate`` (its model's rate for a single model): mix (C, T) -> {source: (C, T)}."""
    if isinstance(model, Ensemble):
        return model.separate_song(mix, rate, chunk_seconds, device)
    return separate_tensor(model, mix, chunk_seconds, rate, device)
