"""DeepConvSep-style STFT ratio-mask separator (Chandna et al. 2017), fully convolutional over time.

Per frame: log1p magnitudes of every audio channel's STFT -> conv across all frequencies (``freq_filters``,
kernel 1 x bins, linear) -> conv across time (``time_filters``, ``time_kernel`` frames, zero-padded, linear)
-> dense bottleneck (``bottleneck``, ReLU) -> one dense branch per source (ReLU) -> back through the
*transposed* time and frequency convs. As in DeepConvSep the transposed convs reuse the encoder's own conv
weights (tied, shared by every source); each source has its own output bias per (channel, bin). ReLU gives
non-negative source magnitudes, ratio masks ``m_i = (mag_i + eps) / (sum_j mag_j + S * eps)`` (they sum to one,
so the sources add up to the mixture even in bins where every magnitude is 0) are applied to the mixture STFT
and the iSTFT (mixture phase) gives one waveform per source.

The original's dense layers act on a fixed 30-frame window; here they act per frame (1x1 convs) so the model
takes any length. Geometry: output length == input length (a multiple of ``hop``, longer than ``n_fft // 2``);
``step = hop``; ``halo = n_fft + (time_kernel - 1) * hop`` input samples, rounded up to a multiple of ``hop``
(an output sample sees the frames within n_fft / 2, whose masks see ``time_kernel - 1`` frames either side,
whose spectra see n_fft / 2 more).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sepray.models.base import STFTSeparator
from sepray.models.checks import check_sources


@dataclass(frozen=True)
class STFTMaskConfig:
    """STFT ratio-mask model; defaults follow DeepConvSep (hop 256 instead of 512)."""

    sources: tuple[str, ...] = ("vocals", "accompaniment")
    audio_channels: int = 1
    n_fft: int = 1024
    hop: int = 256  # <= n_fft // 2 (the Hann-window overlap-add must be invertible)
    freq_filters: int = 50  # conv over all frequencies (kernel 1 x bins)
    time_filters: int = 50  # conv over time
    time_kernel: int = 15  # frames; odd
    bottleneck: int = 128
    mask_eps: float = 1e-8

    def __post_init__(self) -> None:
        check_sources(self)
        if self.n_fft < 4:
            raise ValueError(f"n_fft must be >= 4, got {self.n_fft}")
        if not 1 <= self.hop <= self.n_fft // 2:
            raise ValueError(f"hop must be in [1, n_fft // 2 = {self.n_fft // 2}], got {self.hop}")
        if self.time_kernel < 1 or self.time_kernel % 2 == 0:
            raise ValueError(f"time_kernel must be odd and >= 1, got {self.time_kernel}")
        for name in ("freq_filters", "time_filters", "bottleneck"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.mask_eps > 0:
            raise ValueError(f"mask_eps must be > 0, got {self.mask_eps}")


class STFTMask(STFTSeparator):
    """STFT ratio masks: mix (B, C, T) -> waveforms (B, S, C, T); regression head."""

    head = "regression"

    def __init__(self, config: STFTMaskConfig) -> None:
        super().__init__()
        self.config = config
        bins = config.n_fft // 2 + 1
        inputs = config.audio_channels * bins
        sources = len(config.sources)
        self.freq_conv = nn.Conv1d(inputs, config.freq_filters, 1)  # over frames: (B, C * bins, N)
        self.time_conv = nn.Conv1d(
            config.freq_filters, config.time_filters, config.time_kernel, padding=config.time_kernel // 2
        )
        self.dense = nn.Conv1d(config.time_filters, config.bottleneck, 1)
        # one dense branch per source, computed as one conv
        self.branches = nn.Conv1d(config.bottleneck, sources * config.time_filters, 1)
        self.source_bias = nn.Parameter(torch.zeros(sources, inputs))
        self.step = config.hop
        reach = config.n_fft + (config.time_kernel - 1) * config.hop
        self.halo = config.hop * -(-reach // config.hop)  # a multiple of step, so chunk windows stay aligned

    def magnitudes(self, mag: torch.Tensor) -> torch.Tensor:
        """Mixture magnitudes (B, C, bins, N) -> source magnitudes (B, S, C, bins, N), >= 0."""
        batch, channels, bins, frames = mag.shape
        sources = len(self.config.sources)
        x = torch.log1p(mag).flatten(1, 2)  # (B, C * bins, N)
        x = self.time_conv(self.freq_conv(x))  # (B, time_filters, N)
        x = F.relu(self.dense(x))  # (B, bottleneck, N)
        # one branch output per source, as one batch of S * B items, source-major (torch.export cannot follow a
        # reshape that splits the batch axis): (S * B, time_filters, N)
        x = torch.cat(F.relu(self.branches(x)).chunk(sources, dim=1))
        # back through the encoder's own (tied) convs: (S * B, freq_filters, N) -> (S * B, C * bins, N)
        x = F.conv_transpose1d(x, self.time_conv.weight, padding=self.config.time_kernel // 2)
        x = F.conv_transpose1d(x, self.freq_conv.weight)
        x = x.unflatten(0, (sources, batch)).transpose(0, 1)  # (B, S, C * bins, N)
        x = F.relu(x + self.source_bias[:, :, None])
        return x.unflatten(2, (channels, bins))

    def masks(self, mag: torch.Tensor) -> torch.Tensor:
        """Mixture magnitudes (B, C, bins, N) -> ratio masks (B, S, C, bins, N), summing to one over S."""
        mags = self.magnitudes(mag)  # (B, S, C, bins, N)
        mags = mags.to(torch.promote_types(mags.dtype, torch.float32))  # keeps eps > 0 under autocast
        eps = self.config.mask_eps  # also in the numerator: masks always sum to one (even where all are 0)
        return (mags + eps) / (mags.sum(dim=1, keepdim=True) + eps * mags.shape[1])
