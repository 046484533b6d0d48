"""Output heads shared by the separators built on a skip sum (Structure A, the UMT separator decoder).

``skip sum -> relu -> 1x1 -> relu -> 1x1`` to either 256 mu-law logits or one tanh waveform per source and
audio channel, with the same output protocol as :class:`sepray.models.wavenet.WaveNet` (see ``base.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepray.dsp import MU_LAW_CLASSES, mu_law_class_values
from sepray.models.layers import pointwise

HEADS = ("mulaw", "regression")
DECODE_MODES = ("expectation", "argmax")


class SkipHead(nn.Module):
    """``skip (B, skip_channels, T)`` -> logits ``(B, 256, S, C, T)`` or waveforms ``(B, S, C, T)``."""

    def __init__(
        self,
        skip_channels: int,
        end_channels: int,
        sources: int,
        audio_channels: int,
        head: str,
        decode_mode: str,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if decode_mode not in DECODE_MODES:
            raise ValueError(f"decode_mode must be one of {DECODE_MODES}, got {decode_mode!r}")
        self.head, self.decode_mode = head, decode_mode
        self.sources, self.audio_channels = sources, audio_channels
        outputs = sources * audio_channels * (MU_LAW_CLASSES if head == "mulaw" else 1)
        self.end = nn.Conv1d(skip_channels, end_channels, 1)
        self.out = nn.Conv1d(end_channels, outputs, 1)
        self.register_buffer("class_values", mu_law_class_values(), persistent=False)

    def forward(self, skip: torch.Tensor) -> torch.Tensor:
        """(B, skip_channels, T) -> logits (B, 256, S, C, T) or tanh waveforms (B, S, C, T)."""
        batch, time = skip.shape[0], skip.shape[-1]
        hidden = F.relu(pointwise(self.end, F.relu(skip)), inplace=True)  # (B, end, T)
        y = pointwise(self.out, hidden)  # (B, outputs, T)
        if self.head == "mulaw":
            return y.view(batch, MU_LAW_CLASSES, self.sources, self.audio_channels, time)
        return torch.tanh(y).view(batch, self.sources, self.audio_channels, time)

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Logits (B, 256, S, C, T) or waveforms (B, S, C, T) -> waveforms (B, S, C, T) in [-1, 1]."""
        return decode_output(output, self.head, self.decode_mode, self.class_values)


def decode_output(
    output: torch.Tensor, head: str, decode_mode: str, class_values: torch.Tensor
) -> torch.Tensor:
    """The head protocol's ``decode``: logits (B, 256, S, C, T) or waveforms (B, S, C, T) -> (B, S, C, T)."""
    if head == "regression":
        return output.clamp(-1.0, 1.0)
    values = class_values.to(output.dtype)
    if decode_mode == "argmax":
        return values[output.argmax(dim=1)]
    probs = torch.softmax(output, dim=1)
    return torch.einsum("bkscn,k->bscn", probs, values).clamp(-1.0, 1.0)
