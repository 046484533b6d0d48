"""Training losses per model head.

* ``mulaw`` heads: cross-entropy between logits (B, 256, S, C, T) and the mu-law classes of the target.
* waveform heads: MSE (default) or L1 between estimates (B, S, C, T) and targets (B, S, C, T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sepray.dsp import mu_law_encode

LOSSES = ("auto", "mse", "l1")


def check_loss(head: str, kind: str) -> None:
    """Raise ValueError when a loss kind does not fit a head."""
    if kind not in LOSSES:
        raise ValueError(f"train.loss {kind!r} is unknown; expected one of {LOSSES}")
    if head == "mulaw" and kind != "auto":
        raise ValueError(f"train.loss {kind!r} does not apply to a mu-law head (it uses cross-entropy)")


def separation_loss(
    head: str, output: torch.Tensor, target: torch.Tensor, kind: str = "auto"
) -> torch.Tensor:
    """Scalar loss for a model output and the waveform target (B, S, C, T)."""
    if head == "mulaw":
        if output.dim() != 5 or output.shape[2:] != target.shape[1:]:
            raise ValueError(f"mu-law logits {tuple(output.shape)} do not match target {tuple(target.shape)}")
        return F.cross_entropy(output.float(), mu_law_encode(target))
    if output.shape != target.shape:
        raise ValueError(f"estimate {tuple(output.shape)} does not match target {tuple(target.shape)}")
    if kind == "l1":
        return F.l1_loss(output.float(), target)
    return F.mse_loss(output.float(), target)
