"""Pure tensor DSP helpers (mu-law, resampling, pitch shift, STFT, crop/pad).

Everything here takes and returns torch tensors and wraps torchaudio where it has the operation.
No file I/O, no global state.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from fractions import Fraction

import torch
import torchaudio.functional as AF
from torchaudio.functional.functional import _apply_sinc_resample_kernel, _get_sinc_resample_kernel

MU_LAW_CLASSES = 256


def mu_law_compand(x: torch.Tensor, classes: int = MU_LAW_CLASSES) -> torch.Tensor:
    """Continuous mu-law companding of audio in [-1, 1] (any shape) -> same shape in [-1, 1]."""
    mu = classes - 1
    x = x.clamp(-1.0, 1.0)
    return torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)


def mu_law_encode(x: torch.Tensor, classes: int = MU_LAW_CLASSES) -> torch.Tensor:
    """Quantize audio in [-1, 1] (any shape) to mu-law class indices (int64, same shape) in [0, classes)."""
    return AF.mu_law_encoding(x.clamp(-1.0, 1.0), classes).long()


def mu_law_decode(q: torch.Tensor, classes: int = MU_LAW_CLASSES) -> torch.Tensor:
    """Map mu-law class indices (any shape, integer or float "soft" indices) back to audio in [-1, 1]."""
    mu = classes - 1
    y = q.to(torch.float32) / mu * 2.0 - 1.0
    return torch.sign(y) * (torch.pow(1.0 + mu, y.abs()) - 1.0) / mu


def mu_law_class_values(classes: int = MU_LAW_CLASSES, device=None) -> torch.Tensor:
    """Audio value of every mu-law class, shape (classes,); used for expectation decoding."""
    return mu_law_decode(torch.arange(classes, device=device), classes)


def resample(x: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling along the last axis. (..., T) -> (..., T * new_sr / orig_sr).

    ``torchaudio.functional.resample`` with its defaults, the same numbers, with the filter built once per pair
    of rates (:func:`_resampling_kernel`).
    """
    if orig_sr == new_sr:
        return x
    if not (orig_sr > 0 and new_sr > 0):
        raise ValueError(f"sample rates must be positive, got {orig_sr} and {new_sr}")
    kernel, width = _resampling_kernel(int(orig_sr), int(new_sr), x.device, x.dtype)
    return _apply_sinc_resample_kernel(x, orig_sr, new_sr, math.gcd(orig_sr, new_sr), kernel, width)


@functools.lru_cache(maxsize=32)
def _resampling_kernel(orig_sr: int, new_sr: int, device: torch.device, dtype: torch.dtype):
    """torchaudio's sinc filter bank for one pair of rates (Hann window, width 6, rolloff 0.99): building it
    took longer than applying it (44.1 kHz <-> 8 kHz: 0.19 s, against 0.1 s to filter 30 s of stereo)."""
    return _get_sinc_resample_kernel(orig_sr, new_sr, math.gcd(orig_sr, new_sr), device=device, dtype=dtype)


def resampling_period(orig_sr: int, new_sr: int) -> tuple[int, int, int]:
    """(inp, out, margin): resampling maps each period of ``inp`` input samples to ``out`` output samples,
    and an output period depends on the input period under it plus ``margin`` periods on each side."""
    if orig_sr == new_sr:
        return 1, 1, 0
    g = math.gcd(orig_sr, new_sr)
    inp, out = orig_sr // g, new_sr // g
    # torchaudio's sinc filter reaches ``width`` input samples beyond the period (lowpass_filter_width=6,
    # rolloff=0.99, its defaults, which dsp.resample uses); one spare period for safety.
    width = math.ceil(6 * inp / (min(inp, out) * 0.99))
    return inp, out, -(-width // inp) + 1


def resampled_length(length: int, orig_sr: int, new_sr: int) -> int:
    """Length of ``dsp.resample`` of ``length`` samples."""
    inp, out, _ = resampling_period(orig_sr, new_sr)
    return -(-length * out // inp)


def resample_range(
    read: Callable[[int, int], torch.Tensor], orig_sr: int, new_sr: int, start: int, stop: int
) -> torch.Tensor:
    """Samples [start, stop) of ``resample(x, orig_sr, new_sr)`` (not cropped to its length), where
    ``read(a, b)`` returns ``x[..., a:b]`` with zeros outside ``x``. (..., stop - start).

    Reads whole resampling periods plus the filter's reach, so every output sample is computed with the same
    filter phase and input samples as when resampling ``x`` whole.
    """
    inp, out, margin = resampling_period(orig_sr, new_sr)
    g0, g1 = start // out - margin, -(-stop // out) + margin
    y = resample(read(g0 * inp, g1 * inp), orig_sr, new_sr)  # (..., (g1 - g0) * out)
    return y[..., start - g0 * out : stop - g0 * out]


def pitch_shift(x: torch.Tensor, sample_rate: int, semitones: float, n_fft: int = 512) -> torch.Tensor:
    """Shift the pitch of (..., T) audio by a fractional number of semitones, keeping its length.

    Phase-vocoder time stretch by ``2 ** (semitones / 12)`` followed by resampling back to the original
    length. The resampling ratio is a small fraction close to the exact one (relative error < 1e-4, i.e.
    well under 0.002 semitones): torchaudio's own pitch_shift resamples between nearly coprime rates for
    fractional steps, which builds huge filters and took seconds per call.
    """
    if abs(semitones) < 1e-6 or x.shape[-1] < n_fft:
        return x
    rate = 2.0 ** (semitones / 12.0)
    ratio = Fraction(rate).limit_denominator(200)
    length = x.shape[-1]
    lead = x.shape[:-1]
    flat = x.reshape(-1, length)
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(flat, n_fft, hop_length=hop, window=window, return_complex=True)
    phase_advance = torch.linspace(0, math.pi * hop, spec.shape[-2], device=x.device, dtype=x.dtype)[
        ..., None
    ]
    stretched = AF.phase_vocoder(spec, 1.0 / rate, phase_advance)
    y = torch.istft(stretched, n_fft, hop_length=hop, window=window, length=round(length * rate))
    y = AF.resample(y, ratio.numerator, ratio.denominator)
    y = pad_to(y[..., :length], 0, max(0, length - y.shape[-1]))
    return y.reshape(*lead, length)


def stft(x: torch.Tensor, n_fft: int, hop: int, center: bool = True) -> torch.Tensor:
    """Complex STFT with a Hann window. (..., T) -> (..., n_fft // 2 + 1, frames)."""
    lead = x.shape[:-1]
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]), n_fft, hop_length=hop, window=window, center=center, return_complex=True
    )
    return spec.reshape(*lead, *spec.shape[-2:])


def istft(spec: torch.Tensor, n_fft: int, hop: int, length: int, center: bool = True) -> torch.Tensor:
    """Inverse of :func:`stft`. (..., n_fft // 2 + 1, frames) complex -> (..., length) real."""
    lead = spec.shape[:-2]
    window = torch.hann_window(n_fft, device=spec.device, dtype=spec.real.dtype)
    y = torch.istft(
        spec.reshape(-1, *spec.shape[-2:]), n_fft, hop_length=hop, window=window, center=center, length=length
    )
    return y.reshape(*lead, y.shape[-1])


def center_crop(x: torch.Tensor, length: int) -> torch.Tensor:
    """Crop the last axis of ``x`` symmetrically to ``length`` (extra sample taken from the right)."""
    extra = x.shape[-1] - length
    if extra < 0:
        raise ValueError(f"cannot crop length {x.shape[-1]} to the longer length {length}")
    left = extra // 2
    return x[..., left : left + length]


def pad_to(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Zero-pad the last axis by ``left`` / ``right`` samples."""
    if left == 0 and right == 0:
        return x
    return torch.nn.functional.pad(x, (left, right))


def remix(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Change the channel count of (C, T) audio: average to mono, or repeat mono to ``channels``."""
    if x.shape[0] == channels:
        return x
    if channels == 1:
        return x.mean(dim=0, keepdim=True)
    if x.shape[0] == 1:
        return x.expand(channels, -1).clone()
    raise ValueError(f"cannot map {x.shape[0]} channels to {channels}")
