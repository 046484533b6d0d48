from __future__ import annotations

import numpy as np
import pytest
import torch

from sepray import dsp


def test_mu_law_round_trip_and_range():
    x = torch.linspace(-1, 1, 2001)
    q = dsp.mu_law_encode(x)
    assert q.dtype == torch.int64 and q.min() == 0 and q.max() == 255
    y = dsp.mu_law_decode(q)
    # 8-bit mu-law: quantization error is small near zero and bounded everywhere
    assert (y - x).abs().max() < 0.035
    assert (y - x)[x.abs() < 0.01].abs().max() < 1e-3
    values = dsp.mu_law_class_values()
    assert values.shape == (256,) and torch.all(values[1:] > values[:-1])
    c = dsp.mu_law_compand(x)
    assert torch.allclose(dsp.mu_law_compand(-x), -c) and c.abs().max() <= 1.0


@pytest.mark.parametrize("semitones", [-0.5, -0.2, 0.3, 0.5, 2.0])
def test_pitch_shift_moves_a_tone_by_the_requested_interval(semitones):
    sr = 16000
    t = torch.arange(sr // 2) / sr
    x = 0.5 * torch.sin(2 * np.pi * 440 * t)
    y = dsp.pitch_shift(x.unsqueeze(0), sr, semitones)[0]
    assert y.shape == x.shape
    spectrum = np.abs(np.fft.rfft(y.numpy() * np.hanning(len(y)), n=1 << 18))
    peak = np.argmax(spectrum) * sr / (1 << 18)
    assert peak == pytest.approx(440 * 2 ** (semitones / 12), abs=0.5)


def test_stft_istft_round_trip_and_crop_pad():
    x = torch.randn(2, 3, 4000)
    spec = dsp.stft(x, 256, 64)
    assert spec.shape[:3] == (2, 3, 129)
    assert torch.allclose(dsp.istft(spec, 256, 64, 4000), x, atol=1e-5)
    assert torch.equal(dsp.center_crop(torch.arange(10), 4), torch.tensor([3, 4, 5, 6]))
    assert dsp.pad_to(torch.ones(1, 5), 2, 3).shape == (1, 10)
    with pytest.raises(ValueError):
        dsp.center_crop(torch.arange(3), 5)


def test_resample_and_remix():
    x = torch.randn(2, 44100)
    assert dsp.resample(x, 44100, 16000).shape == (2, 16000)
    assert torch.allclose(dsp.remix(x, 1), x.mean(0, keepdim=True))
    assert dsp.remix(x[:1], 2).shape == (2, 44100)
