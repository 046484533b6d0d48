"""Training and validation crops from songs in memory (no file I/O per batch).

A crop is an input window of ``input_length`` samples and, centred in it, a target window of
``output_length`` samples: target sample ``j`` <-> input sample ``j + (input_length - output_length) // 2``.
The target window always lies inside the song; the input window may reach past the song's edges by up to
the context and is zero-padded there, so song edges are trained like the middle.

Songs are drawn in proportion to their length; with songs of several corpora (``Song.meta["corpus"]``) and
``corpus_weights``, corpus ``c`` gets a share ``w_c / sum(w)`` of the crops, its songs by length within it.
Remix across songs (``augment.remix_prob``): a remixed crop keeps the first source (vocals) of its song and
takes every other source from a crop of another song drawn the same way (any corpus), the mixture re-summed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch

from sepray.config import AugmentConfig
from sepray.data.augment import NO_AUGMENT, augment_crop, keeps_mixture
from sepray.data.corpus import Song

log = logging.getLogger(__name__)


def padded_slice(x: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """``x[..., start:start + length]`` with zeros where the window leaves ``x`` (start may be negative)."""
    total = x.shape[-1]
    lo, hi = max(start, 0), min(start + length, total)
    if lo == start and hi == start + length:
        return x[..., lo:hi]
    out = x.new_zeros(*x.shape[:-1], length)
    if hi > lo:
        out[..., lo - start : hi - start] = x[..., lo:hi]
    return out


class CropSampler:
    """Random training crops with augmentation.

    Songs are chosen with probability proportional to their length, target windows uniformly inside the
    song. ``batch`` returns mix (B, C, input_length) and target (B, len(sources), C, output_length), the
    targets stacked in ``sources`` order. All randomness comes from one seeded ``torch.Generator`` whose state
    :meth:`state_dict` saves, so a resumed run draws the same next batches.
    """

    def __init__(
        self,
        songs: Sequence[Song],
        input_length: int,
        output_length: int,
        sources: Sequence[str],
        augment: AugmentConfig,
        sample_rate: int,
        seed: int,
        domains: Sequence[int] | None = None,
        corpus_weights: Mapping[str, float] | None = None,
    ) -> None:
        self.songs = list(songs)
        if not self.songs:
            raise ValueError("CropSampler: no songs to sample from")
        if not 1 <= output_length <= input_length:
            raise ValueError(
                f"CropSampler: need 1 <= output_length <= input_length, got {output_length}, {input_length}"
            )
        self.input_length = int(input_length)
        self.output_length = int(output_length)
        self.offset = (self.input_length - self.output_length) // 2
        self.sources = tuple(sources)
        self.augment = augment
        self.sample_rate = int(sample_rate)
        self.seed = int(seed)
        if augment.pitch_shift_prob > 0 and self.sample_rate <= 0:
            raise ValueError("CropSampler: pitch shift needs a sample_rate > 0")

        first = self.songs[0]
        self.song_sources = tuple(first.sources)  # every source, augmented together
        self.channels = first.channels
        if not self.sources:
            raise ValueError("CropSampler: sources is empty")
        for song in self.songs:
            missing = [s for s in self.sources if s not in song.sources]
            if missing or set(song.sources) != set(self.song_sources):
                raise ValueError(
                    f"CropSampler: song {song.name!r} has sources {sorted(song.sources)}, "
                    f"expected {sorted(self.song_sources)} including {list(self.sources)}"
                )
            if song.channels != self.channels:
                raise ValueError(
                    f"CropSampler: song {song.name!r} has {song.channels} channels, {first.name!r} {self.channels}"
                )
        self.target_index = [self.song_sources.index(s) for s in self.sources]
        self.weights = song_weights(self.songs, corpus_weights)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.batches_drawn = 0
        if domains is not None and len(domains) != len(self.songs):
            raise ValueError(f"CropSampler: {len(domains)} domain labels for {len(self.songs)} songs")
        self.domains = None if domains is None else torch.tensor(list(domains), dtype=torch.long)
        self.last_picks: list[int] = []  # the songs of the last batch's crops

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """mix (B, C, input_length), target (B, S, C, output_length), float32 on the CPU."""
        if batch_size < 1:
            raise ValueError(f"CropSampler.batch: batch_size must be >= 1, got {batch_size}")
        g = self.generator
        picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=g).tolist()
        mix_out = torch.empty(batch_size, self.channels, self.input_length)
        target_out = torch.empty(batch_size, len(self.sources), self.channels, self.output_length)
        need_mix = keeps_mixture(self.augment)
        for b, i in enumerate(picks):
            song = self.songs[i]
            start = self._crop_start(song)
            mix = padded_slice(song.mix, start, self.input_length) if need_mix else None
            stack = torch.stack(
                [padded_slice(song.sources[s], start, self.input_length) for s in self.song_sources]
            )
            # no draw at all when remix_prob is 0: the batches of a config without remixing stay the same
            if self.augment.remix_prob > 0 and float(torch.rand((), generator=g)) < self.augment.remix_prob:
                self._remix(stack, i)
                mix = stack.sum(dim=0) if need_mix else None
            mix, stack, _, _ = augment_crop(mix, stack, self.augment, self.sample_rate, g)
            mix_out[b] = mix
            target_out[b] = stack[self.target_index, :, self.offset : self.offset + self.output_length]
        self.batches_drawn += 1
        self.last_picks = picks
        return mix_out, target_out

    def _crop_start(self, song: Song) -> int:
        """Start of a random input window of ``song`` (its target window lies inside the song)."""
        positions = max(song.length - self.output_length, 0) + 1
        target_start = int(torch.randint(0, positions, (), generator=self.generator))
        return target_start - self.offset

    def _remix(self, stack: torch.Tensor, picked: int) -> None:
        """Replace every source but the first of ``stack`` (S, C, input_length) by a crop of another song."""
        weights = self.weights
        if len(self.songs) > 1:
            weights = weights.clone()
            weights[picked] = 0.0
        for k in range(1, len(self.song_sources)):
            other = self.songs[int(torch.multinomial(weights, 1, generator=self.generator))]
            start = self._crop_start(other)
            stack[k] = padded_slice(other.sources[self.song_sources[k]], start, self.input_length)

    def labelled_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`batch` (the same draws) plus each crop's domain label (B,) int64, None without ``domains``."""
        mix, target = self.batch(batch_size)
        domains = None if self.domains is None else self.domains[torch.tensor(self.last_picks)]
        return mix, target, domains

    def state_dict(self) -> dict:
        """Plain tensors and ints (loadable with ``torch.load(..., weights_only=True)``)."""
        return {
            "generator": self.generator.get_state(),
            "batches_drawn": self.batches_drawn,
            "seed": self.seed,
            "songs": len(self.songs),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("songs", len(self.songs)) != len(self.songs):
            log.warning(
                "CropSampler: resuming a sampler state saved over %d songs with %d songs; batches will differ",
                state["songs"],
                len(self.songs),
            )
        # a checkpoint loaded with map_location="cuda" moves the state tensor; the generator is a CPU one
        self.generator.set_state(state["generator"].to("cpu", torch.uint8))
        self.batches_drawn = int(state.get("batches_drawn", 0))


def song_weights(songs: Sequence[Song], corpus_weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """Sampling weight of each song (float64): its length; with songs of several corpora and
    ``corpus_weights``, ``w_c * length / (total length of corpus c)``, so corpus ``c`` gets ``w_c / sum(w)`` of
    the crops. A corpus missing from ``corpus_weights`` weighs 1."""
    lengths = torch.tensor([max(song.length, 1) for song in songs], dtype=torch.float64)
    corpora = [str(song.meta.get("corpus", "")) for song in songs]
    if corpus_weights is None or len(set(corpora)) < 2:
        return lengths  # one corpus: exactly the length weights of before
    totals: dict[str, float] = {}
    for corpus, length in zip(corpora, lengths.tolist(), strict=True):
        totals[corpus] = totals.get(corpus, 0.0) + length
    scale = [float(corpus_weights.get(c, 1.0)) / totals[c] for c in corpora]
    return lengths * torch.tensor(scale, dtype=torch.float64)


def fixed_crops(
    songs: Sequence[Song],
    input_length: int,
    output_length: int,
    sources: Sequence[str],
    count: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic validation crops (the same for the same songs and seed), no augmentation.

    Returns mix (count, C, input_length), target (count, S, C, output_length), drawn like the training crops.
    """
    sampler = CropSampler(songs, input_length, output_length, sources, NO_AUGMENT, sample_rate=0, seed=seed)
    return sampler.batch(count)
