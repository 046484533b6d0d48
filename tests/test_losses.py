"""The waveform losses: the soft-thresholded SDR loss against its definition and its limits."""

from __future__ import annotations

import math

import pytest
import torch

from sepray.losses import SDR_EPS, SDR_TAU, check_loss, sdr_loss, separation_loss


def test_sdr_loss_is_minus_the_sdr_of_each_crop_averaged():
    torch.manual_seed(0)
    target = torch.randn(3, 2, 1, 400) * 0.1
    noise = torch.randn(3, 2, 1, 400) * torch.tensor([0.01, 0.05, 0.1]).view(3, 1, 1, 1)
    estimate = target + noise
    eps = SDR_EPS * 400
    energy, error = target.pow(2).sum(-1), noise.pow(2).sum(-1)
    expected = (10 * torch.log10(error + SDR_TAU * energy + eps) - 10 * torch.log10(energy + eps)).mean()
    assert torch.allclose(sdr_loss(estimate, target), expected)
    assert torch.allclose(separation_loss("regression", estimate, target, "sdr"), expected)
    # every crop counts the same whatever its loudness: scaling one crop up leaves the loss as it was
    louder = target.clone(), estimate.clone()
    louder[0][0] *= 10
    louder[1][0] *= 10
    assert abs(sdr_loss(louder[1], louder[0]) - sdr_loss(estimate, target)) < 0.2


def test_sdr_loss_caps_at_30_db_and_a_silent_reference_scores_the_leak():
    target = torch.randn(1, 1, 1, 1000) * 0.5
    assert sdr_loss(target, target).item() == pytest.approx(-30, abs=0.05)
    silent = torch.zeros(1, 1, 1, 1000)
    leak = torch.full((1, 1, 1, 1000), 0.01)
    eps = SDR_EPS * 1000
    assert sdr_loss(leak, silent).item() == pytest.approx(10 * math.log10((0.1 + eps) / eps), rel=1e-5)
    assert sdr_loss(silent, silent).item() == pytest.approx(0.0, abs=1e-6)


def test_sdr_loss_trains_only_waveform_heads():
    check_loss("regression", "sdr")
    with pytest.raises(ValueError, match="mu-law head"):
        check_loss("mulaw", "sdr")
