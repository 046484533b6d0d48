"""Wave-U-Net (Stoller et al. 2018): a 1-D U-Net on raw audio.

Level ``i`` (0 = top): conv (``down_kernel``) + LeakyReLU(0.2), keep the features for the skip, decimate
(drop every other sample). A bottom conv follows the last decimation. Going up: upsample x2 (linear or learned
interpolation), concatenate the level's skip features, conv (``up_kernel``) + LeakyReLU. At the top the mix is
concatenated and a 1x1 conv + tanh gives one waveform per source (``output="difference"``: the last source is
the mix minus the others).

``context=True`` (the paper): valid convolutions, skips centre-cropped before concatenation, the output is
centred in a longer input; ``halo = 0``, ``step = 2 ** levels``, valid input lengths form a progression with
that step (``output_length`` raises ``ValueError`` for the others).
``context=False``: zero-padded "same" convolutions, output length == input length, which must be a multiple of
``2 ** levels``; ``halo`` = receptive radius rounded up to a multiple of ``step``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sepray.dsp import center_crop
from sepray.models.base import Separator
from sepray.models.checks import check_sources
from sepray.models.layers import Upsample2x, decimate

GROWTHS = ("linear", "double")
UPSAMPLINGS = ("linear", "learned")
OUTPUTS = ("direct", "difference")
LEAKY_SLOPE = 0.2


@dataclass(frozen=True)
class WaveUNetConfig:
    """Wave-U-Net; defaults are the paper's (12 levels, 24 * (i + 1) channels, kernels 15 / 5, valid convs)."""

    sources: tuple[str, ...] = ("vocals", "accompaniment")
    audio_channels: int = 1
    levels: int = 12
    channels: int = 24  # features at the top level
    growth: str = "linear"  # linear: channels * (i + 1) at level i (the paper) | double: channels * 2 ** i
    down_kernel: int = 15  # odd
    up_kernel: int = 5  # odd
    upsampling: str = "linear"  # linear | learned (per-channel learned interpolation weights)
    context: bool = True  # True: valid convs + crop-and-concat; False: zero-padded "same" convs
    output: str = "direct"  # direct (one tanh output per source) | difference (last = mix - the others)

    def __post_init__(self) -> None:
        check_sources(self)
        if self.levels < 1 or self.channels < 1:
            raise ValueError(f"levels and channels must be >= 1, got {self.levels}, {self.channels}")
        if self.growth not in GROWTHS:
            raise ValueError(f"growth must be one of {GROWTHS}, got {self.growth!r}")
        for name in ("down_kernel", "up_kernel"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise ValueError(f"{name} must be odd and >= 1, got {value}")
        if self.upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {self.upsampling!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.output == "difference" and len(self.sources) < 2:
            raise ValueError("output='difference' needs at least two sources")


class WaveUNet(Separator):
    """Wave-U-Net: mix (B, C, T_in) -> waveforms (B, S, C, T_out); regression head."""

    head = "regression"

    def __init__(self, config: WaveUNetConfig) -> None:
        super().__init__()
        self.config = config
        levels, audio = config.levels, config.audio_channels
        widths = [self.level_channels(i) for i in range(levels + 1)]
        down_pad = 0 if config.context else config.down_kernel // 2
        up_pad = 0 if config.context else config.up_kernel // 2
        self.down = nn.ModuleList(
            nn.Conv1d(audio if i == 0 else widths[i - 1], widths[i], config.down_kernel, padding=down_pad)
            for i in range(levels)
        )
        self.bottom = nn.Conv1d(widths[levels - 1], widths[levels], config.down_kernel, padding=down_pad)
        self.upsample = nn.ModuleList(
            Upsample2x(widths[i + 1], learned=config.upsampling == "learned") for i in range(levels)
        )
        self.up = nn.ModuleList(
            nn.Conv1d(widths[i + 1] + widths[i], widths[i], config.up_kernel, padding=up_pad)
            for i in range(levels)
        )
        estimated = len(config.sources) - (config.output == "difference")
        self.out = nn.Conv1d(widths[0] + audio, estimated * audio, 1)
        self.step = 2**levels
        self.halo = 0 if config.context else -(-self.receptive_radius() // self.step) * self.step
        if config.context:
            self._min_bottom = self._smallest_bottom()
            # Input and output lengths are both step * bottom + constant (see _lengths).
            in_len, out_len = self._lengths(self._min_bottom)
            self._in_offset = in_len - self.step * self._min_bottom
            self._out_offset = out_len - self.step * self._min_bottom

    def level_channels(self, level: int) -> int:
        """Feature channels at ``level`` (0 = top, ``levels`` = bottom)."""
        if self.config.growth == "linear":
            return self.config.channels * (level + 1)
        return self.config.channels * 2**level

    # ---- geometry -------------------------------------------------------------------------------------------

    def _lengths(self, bottom: int) -> tuple[int, int]:
        """Valid geometry: (input length, output length) for a bottom conv output of ``bottom`` samples."""
        kd, ku = self.config.down_kernel, self.config.up_kernel
        n = bottom + kd - 1  # input of the bottom conv
        for _ in range(self.config.levels):
            n = 2 * n - 1 + kd - 1  # odd conv output decimates to n samples; the conv adds kd - 1
        out = bottom
        for _ in range(self.config.levels):
            out = 2 * out - 1 - (ku - 1)
        return n, out

    def _smallest_bottom(self) -> int:
        """Smallest bottom length for which every upsampling conv still has an output."""
        ku = self.config.up_kernel
        bottom = 1
        while True:
            out, ok = bottom, True
            for _ in range(self.config.levels):
                out = 2 * out - ku
                ok = ok and out >= 1
            if ok:
                return bottom
            bottom += 1

    def receptive_radius(self) -> int:
        """Same geometry: input samples either side of an output sample that can influence it (an upper bound)."""
        levels, kd, ku = self.config.levels, self.config.down_kernel, self.config.up_kernel
        down = (kd // 2) * (2**levels - 1) + (kd // 2) * 2**levels  # down convs + bottom conv
        up = (ku // 2) * (2**levels - 1) + (2 ** (levels + 1) - 2)  # up convs + one interpolation neighbour
        return down + up

    def output_length(self, input_length: int) -> int:
        if not self.config.context:
            if input_length < self.step or input_length % self.step:
                raise ValueError(
                    f"input length {input_length} must be a positive multiple of 2 ** levels = {self.step}"
                )
            return input_length
        smallest = self.step * self._min_bottom + self._in_offset
        if input_length < smallest or (input_length - smallest) % self.step:
            above = smallest + self.step * max(0, -(-(input_length - smallest) // self.step))
            raise ValueError(
                f"input length {input_length} is not valid: valid lengths are {smallest} + k * {self.step} "
                f"(next valid: {above})"
            )
        return input_length - self._in_offset + self._out_offset

    def input_length(self, output_length: int) -> int:
        if not self.config.context:
            return self.step * max(1, -(-output_length // self.step))
        bottom = max(self._min_bottom, -(-(output_length - self._out_offset) // self.step))
        return self.step * bottom + self._in_offset

    # ---- forward --------------------------------------------------------------------------------------------

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, C, T_in) -> (B, S, C, T_out)."""
        self.check_input(mix)
        same = not self.config.context
        skips = []
        x = mix
        for conv in self.down:
            x = F.leaky_relu(conv(x), LEAKY_SLOPE)  # (B, ch_i, T_i)
            skips.append(x)
            x = decimate(x)
        x = F.leaky_relu(self.bottom(x), LEAKY_SLOPE)  # (B, ch_L, T_L)
        for level in reversed(range(self.config.levels)):
            x = self.upsample[level](x, same=same)
            x = torch.cat([x, center_crop(skips[level], x.shape[-1])], dim=1)
            x = F.leaky_relu(self.up[level](x), LEAKY_SLOPE)  # (B, ch_level, T')
        mix_out = center_crop(mix, x.shape[-1])  # (B, C, T_out)
        y = torch.tanh(self.out(torch.cat([x, mix_out], dim=1)))  # (B, S' * C, T_out)
        batch, channels, time_out = mix.shape[0], mix.shape[1], x.shape[-1]
        y = y.view(batch, -1, channels, time_out)  # (B, S', C, T_out)
        if self.config.output == "difference":
            y = torch.cat([y, (mix_out - y.sum(dim=1)).unsqueeze(1)], dim=1)
        return y

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, S, C, T) -> the same clamped to [-1, 1] (the difference output can exceed it)."""
        return output.clamp(-1.0, 1.0)
