"""Training losses per model head.

* ``mulaw`` heads: cross-entropy between logits (B, 256, S, C, T) and the mu-law classes of the target.
* waveform heads: MSE (default), L1, or ``sdr`` between estimates (B, S, C, T) and targets (B, S, C, T).
  ``sdr`` is the negative soft-thresholded SDR per (crop, source, channel), averaged:
  ``10 log10(|s - s^|^2 + tau |s|^2 + eps) - 10 log10(|s|^2 + eps)`` with ``tau = 1e-3`` (SDR capped at
  30 dB, so crops already separated well stop dominating) and ``eps = 1e-6`` per sample (a silent reference,
  such as vocals between phrases, makes the loss the log energy of what leaked in). Every crop counts the
  same whatever its loudness, as every frame does in the framewise median SDR a separator is scored by.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sepray.dsp import mu_law_encode

LOSSES = ("auto", "mse", "l1", "sdr")
SDR_TAU = 1e-3
SDR_EPS = 1e-6  # per sample


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
    if kind == "sdr":
        return sdr_loss(output.float(), target)
    return F.mse_loss(output.float(), target)


def sdr_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative soft-thresholded SDR in dB, (..., T) estimates and targets -> scalar mean over the leading axes."""
    eps = SDR_EPS * target.shape[-1]
    energy = target.pow(2).sum(-1)
    error = (target - estimate).pow(2).sum(-1)
    return (10 * torch.log10(error + SDR_TAU * energy + eps) - 10 * torch.log10(energy + eps)).mean()
