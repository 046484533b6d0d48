"""Domain confusion for the Universal Music Translation encoder: a domain classifier on the latent and a
gradient reversal function.

* :class:`DomainClassifier`: latent ``(B, latent_channels, frames)`` -> ``layers x [1x1 conv, channels, ELU]``
  -> 1x1 to ``num_domains`` logits, averaged over time -> ``(B, num_domains)``.
* :func:`reverse_gradient`: identity forward; backward multiplies the gradient by ``-scale``.
"""

from __future__ import annotations

import torch
from torch import nn


class GradientReversal(torch.autograd.Function):
    """``forward(x, scale) = x``; ``backward(g) = -scale * g`` (no gradient for ``scale``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = float(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity on ``x`` (any shape) whose backward pass multiplies the incoming gradient by ``-scale``."""
    return GradientReversal.apply(x, scale)


class DomainClassifier(nn.Module):
    """latent (B, latent_channels, frames) -> domain logits (B, num_domains), averaged over the frames."""

    def __init__(self, latent_channels: int, num_domains: int, channels: int = 100, layers: int = 3) -> None:
        super().__init__()
        if min(latent_channels, num_domains, channels, layers) < 1:
            raise ValueError("domain classifier sizes must be >= 1")
        blocks: list[nn.Module] = []
        width = latent_channels
        for _ in range(layers):
            blocks += [nn.Conv1d(width, channels, 1), nn.ELU()]
            width = channels
        blocks.append(nn.Conv1d(width, num_domains, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, latent_channels, frames) -> (B, num_domains)."""
        return self.net(latent).mean(dim=-1)
