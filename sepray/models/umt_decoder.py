"""The causal (autoregressive) WaveNet decoder of the Universal Music Translation network.

Inputs are the decoder's own previous outputs as mu-law classes, fed as values ``class / 127.5 - 1`` (the
quantized companded signal), one channel per output signal (``outputs = sources * audio_channels``), shifted by
one sample: the input at time ``t`` is the class of sample ``t - 1``; at ``t = 0`` it is silence
(:data:`SILENCE_CLASS`). Every convolution is causal (left zero padding), so the full-sequence ``forward`` is
the teacher-forced training pass and ``logits[..., t]`` depends only on inputs ``<= t`` (classes ``< t``).

Layers: causal input conv (``input_kernel``) -> ``blocks x layers_per_block`` gated layers
``h = tanh(a) * sigmoid(b)``, ``[a; b] = causal dilated conv(x) + own 1x1(cond)`` (the conditioning enters every
layer through its own 1x1 conv), ``x <- x + 1x1(h)``, ``skip += 1x1(h)`` -> relu -> 1x1 -> relu -> 1x1 to
256 logits per output signal.

:mod:`sepray.models.generation` runs this decoder sample by sample (naive and cached).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepray.dsp import MU_LAW_CLASSES

SILENCE_CLASS = MU_LAW_CLASSES // 2  # mu_law_encode(0.0)


def class_inputs(classes: torch.Tensor) -> torch.Tensor:
    """Mu-law classes (any shape, int) -> decoder input values in [-1, 1] (float32, same shape)."""
    return classes.to(torch.float32) * (2.0 / (MU_LAW_CLASSES - 1)) - 1.0


def shifted_inputs(classes: torch.Tensor) -> torch.Tensor:
    """Teacher forcing: mu-law classes (B, M, T) -> decoder inputs (B, M, T) (float32), the classes shifted
    right by one sample with silence first; use ``mu_law_encode(target)`` for a waveform target."""
    return class_inputs(F.pad(classes[..., :-1], (1, 0), value=SILENCE_CLASS))


class CausalConv(nn.Conv1d):
    """``nn.Conv1d`` with left zero padding: (B, C_in, T) -> (B, C_out, T); output t sees inputs t - span + 1 .. t."""

    @property
    def span(self) -> int:
        """Input samples one output sample sees: (kernel - 1) * dilation + 1."""
        return (self.kernel_size[0] - 1) * self.dilation[0] + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.span - 1, 0)))


class CausalGatedLayer(nn.Module):
    """Gated causal dilated residual layer with a conditioning input.

    ``x (B, channels, T)``, ``cond (B, cond_channels, T)`` -> ``(residual (B, channels, T) or None, h (B, channels, T))``;
    the skip 1x1 (``skip``) is applied by the decoder (fused over layers when generating).
    """

    def __init__(
        self,
        channels: int,
        skip_channels: int,
        kernel_size: int,
        dilation: int,
        cond_channels: int,
        residual: bool,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.conv = CausalConv(channels, 2 * channels, kernel_size, dilation=dilation)
        self.cond = nn.Conv1d(cond_channels, 2 * channels, 1, bias=False)
        self.residual = nn.Conv1d(channels, channels, 1) if residual else None
        self.skip = nn.Conv1d(channels, skip_channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        a = self.conv(x) + self.cond(cond)  # (B, 2C, T)
        h = torch.tanh(a[:, : self.channels]) * torch.sigmoid(a[:, self.channels :])  # (B, C, T)
        return (x + self.residual(h) if self.residual is not None else None), h


class CausalWaveNetDecoder(nn.Module):
    """Conditioned causal WaveNet: inputs (B, outputs, T), cond (B, cond_channels, T) -> logits (B, 256, outputs, T)."""

    def __init__(
        self,
        outputs: int,
        cond_channels: int,
        residual_channels: int = 128,
        skip_channels: int = 128,
        end_channels: int = 128,
        blocks: int = 4,
        layers_per_block: int = 10,
        kernel_size: int = 3,
        dilation_base: int = 2,
        input_kernel: int = 2,
    ) -> None:
        super().__init__()
        if min(outputs, cond_channels, residual_channels, skip_channels, end_channels) < 1:
            raise ValueError("decoder channel counts must be >= 1")
        if min(blocks, layers_per_block, kernel_size, dilation_base, input_kernel) < 1:
            raise ValueError("decoder blocks, layers, kernels and dilation base must be >= 1")
        self.outputs = outputs
        self.input_conv = CausalConv(outputs, residual_channels, input_kernel)
        count = blocks * layers_per_block
        self.layers = nn.ModuleList(
            CausalGatedLayer(
                residual_channels,
                skip_channels,
                kernel_size,
                dilation_base ** (index % layers_per_block),
                cond_channels,
                residual=index < count - 1,  # the last residual output is unused
            )
            for index in range(count)
        )
        self.end = nn.Conv1d(skip_channels, end_channels, 1)
        self.out = nn.Conv1d(end_channels, MU_LAW_CLASSES * outputs, 1)

    @property
    def receptive_field(self) -> int:
        """Input samples one output sample depends on (the current one included)."""
        return 1 + self.input_conv.span - 1 + sum(layer.conv.span - 1 for layer in self.layers)

    def convs(self) -> list[CausalConv]:
        """The causal convs in order (input conv, then each layer's dilated conv): the ones that keep queues."""
        return [self.input_conv, *(layer.conv for layer in self.layers)]

    def head(self, skip: torch.Tensor) -> torch.Tensor:
        """Skip sum (B, skip_channels, T) -> logits (B, 256, outputs, T)."""
        y = self.out(F.relu(self.end(F.relu(skip))))  # (B, 256 * outputs, T)
        return y.view(y.shape[0], MU_LAW_CLASSES, self.outputs, y.shape[-1])

    def forward(self, inputs: torch.Tensor, cond: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """(B, outputs, T) input values, (B, cond_channels, T) -> logits (B, 256, outputs, T).

        ``record``: a list that receives the input of every causal conv (``convs()`` order), used to fill the
        generation queues from a prompt.
        """
        if inputs.dim() != 3 or inputs.shape[1] != self.outputs:
            raise ValueError(
                f"decoder: expected inputs (batch, {self.outputs}, time), got {tuple(inputs.shape)}"
            )
        if cond.dim() != 3 or cond.shape[0] != inputs.shape[0] or cond.shape[-1] != inputs.shape[-1]:
            raise ValueError(
                f"decoder: cond {tuple(cond.shape)} does not match inputs {tuple(inputs.shape)} (batch, time)"
            )
        if record is not None:
            record.append(inputs)
        x = self.input_conv(inputs)  # (B, R, T)
        skip = 0
        for layer in self.layers:
            if record is not None:
                record.append(x)
            x, h = layer(x, cond)
            skip = skip + layer.skip(h)  # (B, skip, T)
        return self.head(skip)
