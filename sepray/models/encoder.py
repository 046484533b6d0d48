"""The non-causal dilated encoder shared by Structure A and the Universal Music Translation network.

mix ``(B, audio_channels, T)`` -> optional mu-law companding -> input conv (kernel ``input_kernel``) ->
``blocks x layers_per_block`` non-causal dilated residual layers (:class:`DilatedResidualStack`, valid
convolutions) -> optional 1x1 to ``latent_channels`` -> ``(B, latent_channels, T - context)``, output sample
``j`` centred on input sample ``j + context // 2``.
"""

from __future__ import annotations

import torch
from torch import nn

from sepray.dsp import mu_law_compand
from sepray.models.layers import DilatedResidualStack, pointwise

INPUTS = ("mulaw", "raw")


class DilatedEncoder(nn.Module):
    """(B, audio_channels, T) -> (B, out_channels, T - context); ``out_channels`` is the latent size, or
    ``channels`` when ``latent_channels == 0`` (no 1x1 projection)."""

    def __init__(
        self,
        audio_channels: int,
        input: str,
        input_kernel: int,
        channels: int,
        blocks: int,
        layers_per_block: int,
        kernel_size: int,
        dilation_base: int,
        activation: str = "relu",
        latent_channels: int = 0,
    ) -> None:
        super().__init__()
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
        self.input = input
        self.input_conv = nn.Conv1d(audio_channels, channels, input_kernel)
        self.stack = DilatedResidualStack(
            channels,
            blocks,
            layers_per_block,
            kernel_size=kernel_size,
            dilation_base=dilation_base,
            activation=activation,
        )
        self.latent = nn.Conv1d(channels, latent_channels, 1) if latent_channels else None
        self.out_channels = latent_channels or channels
        self.context = input_kernel - 1 + self.stack.context

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, audio_channels, T) -> (B, out_channels, T - context)."""
        x = mu_law_compand(mix) if self.input == "mulaw" else mix
        residual, _ = self.stack(self.input_conv(x))  # (B, channels, T - context)
        return residual if self.latent is None else pointwise(self.latent, residual)
