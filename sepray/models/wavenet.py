"""Non-causal WaveNet separator (the design notes' "A[0:100] predicts B[50]").

mix -> front end (input conv, or a hop-1 STFT) -> ``blocks x layers_per_block`` gated dilated residual layers
-> sum of skips -> relu -> 1x1 -> relu -> 1x1 head (256 mu-law logits or a tanh waveform per source/channel).

Every convolution is valid (no padding), so one forward pass separates a whole chunk and the geometry is exact:
``output_length = input_length - (receptive_field - 1)``, output sample ``j`` centred on input sample
``j + (receptive_field - 1) // 2``; ``halo = 0``, ``step = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sepray.dsp import MU_LAW_CLASSES, mu_law_class_values, mu_law_compand, stft
from sepray.models.base import ContextSeparator, GraphCut
from sepray.models.checks import check_sources
from sepray.models.layers import DilatedResidualStack, pointwise

INPUTS = ("mulaw", "raw", "stft")
HEADS = ("mulaw", "regression")
DECODE_MODES = ("expectation", "argmax")


@dataclass(frozen=True)
class WaveNetConfig:
    """WaveNet separator; defaults are the original (5 x 9 layers, receptive field 5,135 samples)."""

    sources: tuple[str, ...] = ("vocals", "accompaniment")
    audio_channels: int = 1
    input: str = "mulaw"  # mulaw (continuous mu-law companding) | raw | stft (log-magnitude, hop-1 STFT)
    head: str = "mulaw"  # mulaw (256 logits, cross-entropy) | regression (tanh waveform)
    decode_mode: str = "expectation"  # mulaw head: expectation (softmax-weighted class values) | argmax
    blocks: int = 5
    layers_per_block: int = 9
    dilation_base: int = 2  # dilation of layer i in a block: dilation_base ** i
    kernel_size: int = 3  # odd
    input_kernel: int = 25  # odd; the input conv (unused when input == "stft")
    residual_channels: int = 128
    skip_channels: int = 512
    end_channels: int = 256
    stft_n_fft: int = 256  # input == "stft": window of the hop-1 STFT (a valid conv with this kernel)

    def __post_init__(self) -> None:
        check_sources(self)
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.decode_mode not in DECODE_MODES:
            raise ValueError(f"decode_mode must be one of {DECODE_MODES}, got {self.decode_mode!r}")
        for name in ("blocks", "layers_per_block", "dilation_base"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("kernel_size", "input_kernel"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise ValueError(f"{name} must be odd and >= 1 (keeps the output centred), got {value}")
        for name in ("residual_channels", "skip_channels", "end_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.stft_n_fft < 2:
            raise ValueError(f"stft_n_fft must be >= 2, got {self.stft_n_fft}")


class WaveNet(ContextSeparator):
    """Non-causal WaveNet: mix (B, C, T) -> logits (B, 256, S, C, T_out) or waveforms (B, S, C, T_out)."""

    def __init__(self, config: WaveNetConfig) -> None:
        super().__init__()
        self.config = config
        self.head = config.head
        channels = config.audio_channels
        outputs = len(config.sources) * channels * (MU_LAW_CLASSES if config.head == "mulaw" else 1)
        if config.input == "stft":
            bins = config.stft_n_fft // 2 + 1
            self.front_context = config.stft_n_fft - 1
            self.input_conv = nn.Conv1d(channels * bins, config.residual_channels, 1)
        else:
            self.front_context = config.input_kernel - 1
            self.input_conv = nn.Conv1d(channels, config.residual_channels, config.input_kernel)
        self.stack = DilatedResidualStack(
            config.residual_channels,
            config.blocks,
            config.layers_per_block,
            kernel_size=config.kernel_size,
            dilation_base=config.dilation_base,
            skip_channels=config.skip_channels,
            activation="gated",
            final_residual=False,  # only the skips feed the output
        )
        self.end = nn.Conv1d(config.skip_channels, config.end_channels, 1)
        self.out = nn.Conv1d(config.end_channels, outputs, 1)
        self.register_buffer("class_values", mu_law_class_values(), persistent=False)

    @property
    def context(self) -> int:
        """Receptive field - 1: input samples lost between input and output."""
        return self.front_context + self.stack.context

    def spectral_features(self, mix: torch.Tensor) -> torch.Tensor:
        """``input == "stft"``: log-magnitude hop-1 STFT, (B, C, T) -> (B, C * bins, T - stft_n_fft + 1)."""
        spec = stft(mix, self.config.stft_n_fft, hop=1, center=False)  # (B, C, bins, T - n_fft + 1)
        return torch.log1p(spec.abs()).flatten(1, 2)

    def features(self, mix: torch.Tensor) -> torch.Tensor:
        """Front end: (B, C, T) -> (B, residual_channels, T - front_context)."""
        if self.config.input == "stft":
            return pointwise(self.input_conv, self.spectral_features(mix))
        x = mu_law_compand(mix) if self.config.input == "mulaw" else mix
        return self.input_conv(x)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> mu-law logits (B, 256, S, C, T_out) or waveforms (B, S, C, T_out)."""
        self.check_input(mix)
        return self.from_features(self.features(mix))

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Front-end output (B, residual_channels, T') -> logits (B, 256, S, C, T_out) or waveforms
        (B, S, C, T_out), ``T_out = T' - stack context``."""
        batch, time_out = features.shape[0], features.shape[-1] - self.stack.context
        _, skip = self.stack(features, skip_length=time_out)  # (B, skip, T_out)
        hidden = F.relu(pointwise(self.end, F.relu(skip, inplace=True)), inplace=True)  # (B, end, T_out)
        y = pointwise(self.out, hidden)  # (B, outputs, T_out)
        sources, channels = len(self.config.sources), self.config.audio_channels
        if self.head == "mulaw":
            return y.view(batch, MU_LAW_CLASSES, sources, channels, time_out)
        return torch.tanh(y).view(batch, sources, channels, time_out)

    def graph_cut(self) -> GraphCut:
        """``input == "stft"``: the graph starts after the STFT (spectral features (B, C * bins, T')); else all
        of ``waveforms(forward(mix))``."""
        if self.config.input != "stft":
            return super().graph_cut()
        return GraphCut(_FromSpectralFeatures(self), 2, self.stack.context + 2, 1)  # two output samples

    def graph_input(self, mix: torch.Tensor) -> tuple[torch.Tensor, Any]:
        if self.config.input != "stft":
            return super().graph_input(mix)
        self.check_input(mix)
        return self.spectral_features(mix), None

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Logits (B, 256, S, C, T) or waveforms (B, S, C, T) -> waveforms (B, S, C, T) in [-1, 1]."""
        if self.head == "regression":
            return output.clamp(-1.0, 1.0)
        values = self.class_values.to(output.dtype)
        if self.config.decode_mode == "argmax":
            return values[output.argmax(dim=1)]
        probs = torch.softmax(output, dim=1)
        return torch.einsum("bkscn,k->bscn", probs, values).clamp(-1.0, 1.0)


class _FromSpectralFeatures(nn.Module):
    """A WaveNet with STFT input after its STFT: features (B, C * bins, T') -> waveforms (B, S, C, T_out)."""

    def __init__(self, model: WaveNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        model = self.model
        return model.waveforms(model.from_features(pointwise(model.input_conv, features)))
