"""Structure A (design notes): a non-causal dilated encoder and a decoder "the same as the encoder".

mix -> encoder (input conv, ``encoder_blocks x encoder_layers_per_block`` non-causal dilated residual layers,
ReLU by default) -> optional 1x1 bottleneck to ``latent_channels`` -> 1x1 back to ``residual_channels`` ->
decoder (``decoder_blocks x decoder_layers_per_block`` layers of the same kind) -> sum of the decoder's skips ->
relu -> 1x1 -> relu -> 1x1 head (256 mu-law logits or a tanh waveform per source/channel). No down- or
upsampling and no domain confusion loss (the notes found both made separation worse).

Every convolution is valid (no padding): ``output_length = input_length - (receptive_field - 1)``, output sample
``j`` centred on input sample ``j + (receptive_field - 1) // 2``; ``halo = 0``, ``step = 1``. The output protocol
is the WaveNet separator's (see ``base.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sepray.models.base import ContextSeparator
from sepray.models.checks import check_at_least, check_choices, check_odd, check_sources
from sepray.models.encoder import INPUTS, DilatedEncoder
from sepray.models.heads import DECODE_MODES, HEADS, SkipHead
from sepray.models.layers import ACTIVATIONS, DilatedResidualStack, pointwise


@dataclass(frozen=True)
class StructureAConfig:
    """Structure A; defaults follow the notes (encoder 3 x 10 ReLU layers, decoder the same, 128 channels)."""

    sources: tuple[str, ...] = ("vocals", "accompaniment")
    audio_channels: int = 1
    input: str = "mulaw"  # mulaw (continuous mu-law companding) | raw
    head: str = "mulaw"  # mulaw (256 logits, cross-entropy) | regression (tanh waveform)
    decode_mode: str = "expectation"  # mulaw head: expectation | argmax
    encoder_blocks: int = 3
    encoder_layers_per_block: int = 10
    decoder_blocks: int = 3  # the notes: "decoding part the same as encoding" (the original code used 4 x 9)
    decoder_layers_per_block: int = 10
    dilation_base: int = 2  # dilation of layer i in a block: dilation_base ** i
    kernel_size: int = 3  # odd
    input_kernel: int = 3  # odd
    activation: str = (
        "relu"  # residual layers of both stacks: relu (UMT encoder layer) | gated (tanh * sigmoid)
    )
    residual_channels: int = 128
    latent_channels: int = 64  # 1x1 bottleneck between encoder and decoder; 0 = none
    skip_channels: int = 128
    end_channels: int = 128

    def __post_init__(self) -> None:
        check_sources(self)
        check_choices(
            self, {"input": INPUTS, "head": HEADS, "decode_mode": DECODE_MODES, "activation": ACTIVATIONS}
        )
        check_at_least(self, (
            "encoder_blocks", "encoder_layers_per_block", "decoder_blocks", "decoder_layers_per_block",
            "dilation_base", "residual_channels", "skip_channels", "end_channels",
        ))  # fmt: skip
        check_odd(self, ("kernel_size", "input_kernel"))
        if self.latent_channels < 0:
            raise ValueError(f"latent_channels must be >= 0 (0 = no bottleneck), got {self.latent_channels}")


class StructureA(ContextSeparator):
    """mix (B, C, T) -> logits (B, 256, S, C, T_out) or waveforms (B, S, C, T_out)."""

    def __init__(self, config: StructureAConfig) -> None:
        super().__init__()
        self.config = config
        self.head = config.head
        self.encoder = DilatedEncoder(
            config.audio_channels,
            config.input,
            config.input_kernel,
            config.residual_channels,
            config.encoder_blocks,
            config.encoder_layers_per_block,
            config.kernel_size,
            config.dilation_base,
            activation=config.activation,
            latent_channels=config.latent_channels,
        )
        self.expand = (
            nn.Conv1d(config.latent_channels, config.residual_channels, 1) if config.latent_channels else None
        )
        self.decoder = DilatedResidualStack(
            config.residual_channels,
            config.decoder_blocks,
            config.decoder_layers_per_block,
            kernel_size=config.kernel_size,
            dilation_base=config.dilation_base,
            skip_channels=config.skip_channels,
            activation=config.activation,
            final_residual=False,  # only the skips feed the output
        )
        self.output_head = SkipHead(
            config.skip_channels,
            config.end_channels,
            len(config.sources),
            config.audio_channels,
            config.head,
            config.decode_mode,
        )

    @property
    def context(self) -> int:
        """Receptive field - 1: input samples lost between input and output."""
        return self.encoder.context + self.decoder.context

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> mu-law logits (B, 256, S, C, T_out) or waveforms (B, S, C, T_out)."""
        self.check_input(mix)
        latent = self.encoder(mix)  # (B, latent, T - encoder context)
        x = latent if self.expand is None else pointwise(self.expand, latent)  # (B, residual, T')
        _, skip = self.decoder(x)  # (B, skip, T_out)
        return self.output_head(skip)

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Logits (B, 256, S, C, T) or waveforms (B, S, C, T) -> waveforms (B, S, C, T) in [-1, 1]."""
        return self.output_head.decode(output)
