"""Training-time augmentation of one crop, configured by :class:`sepray.config.AugmentConfig`.

* Source gains (the notes, after Wave-U-Net): every source ``i`` is scaled by ``f_i ~ U[gain_min, gain_max]``
  and the input re-summed, ``newA = vocals * f0 + accompaniment * f1``; targets carry the same gains
  (``C * f1``). With ``gain_min == gain_max == 1`` the input stays the song's own mixture crop.
* Pitch shift (UMT): with probability ``pitch_shift_prob`` a segment of ``U[pitch_min_seconds,
  pitch_max_seconds]`` seconds inside the crop is shifted by ``U(-pitch_semitones, pitch_semitones)``
  semitones. ``pitch_target == "input"`` shifts only the mixture (the encoder sees augmented audio, the
  target is clean); ``"both"`` shifts the sources and re-sums the mixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sepray import dsp
from sepray.config import AugmentConfig

NO_AUGMENT = AugmentConfig(gain_min=1.0, gain_max=1.0, pitch_shift_prob=0.0)


@dataclass(frozen=True)
class PitchSegment:
    """Where a crop was pitch-shifted: samples ``[start, start + length)``, by ``semitones``."""

    start: int
    length: int
    semitones: float


def keeps_mixture(augment: AugmentConfig) -> bool:
    """True when the input is the song's own mixture crop (unit gains; pitch shift may still touch it)."""
    return augment.gain_min == 1.0 and augment.gain_max == 1.0


def augment_crop(
    mix: torch.Tensor | None,
    sources: torch.Tensor,
    augment: AugmentConfig,
    sample_rate: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PitchSegment | None]:
    """Augment one crop.

    Args:
        mix: (C, L) the song's mixture crop; may be None unless :func:`keeps_mixture` (it is not used then).
        sources: (S, C, L) every source of the song, stacked.
    Returns:
        (mix (C, L), sources (S, C, L), gains (S,), pitch segment or None). The inputs are never modified.
    """
    n_sources, _, length = sources.shape
    gains = augment.gain_min + (augment.gain_max - augment.gain_min) * torch.rand(
        n_sources, generator=generator, dtype=torch.float64
    )
    gains = gains.to(torch.float32)
    if keeps_mixture(augment):
        if mix is None:
            raise ValueError("augment_crop: the mixture crop is needed when the gains are 1")
    else:
        sources = sources * gains.view(n_sources, 1, 1)
        mix = sources.sum(dim=0)

    segment = None
    if augment.pitch_shift_prob > 0 and torch.rand((), generator=generator).item() < augment.pitch_shift_prob:
        seconds = augment.pitch_min_seconds + (augment.pitch_max_seconds - augment.pitch_min_seconds) * float(
            torch.rand((), generator=generator, dtype=torch.float64)
        )
        seg_len = min(length, max(1, round(seconds * sample_rate)))
        start = int(torch.randint(0, length - seg_len + 1, (), generator=generator))
        semitones = augment.pitch_semitones * (
            2.0 * float(torch.rand((), generator=generator, dtype=torch.float64)) - 1.0
        )
        segment = PitchSegment(start, seg_len, semitones)
        stop = start + seg_len
        if augment.pitch_target == "input":
            mix = mix.clone()
            mix[:, start:stop] = dsp.pitch_shift(mix[:, start:stop], sample_rate, semitones)
        else:
            sources = sources.clone()
            sources[:, :, start:stop] = dsp.pitch_shift(sources[:, :, start:stop], sample_rate, semitones)
            mix = sources.sum(dim=0)
    return mix, sources, gains, segment
