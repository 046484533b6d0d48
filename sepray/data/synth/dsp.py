"""numpy signal building blocks of the synthesizer (sepray/dsp.py holds the torch ones for models)."""

from __future__ import annotations

import math

import numpy as np


def _stft_filter(
    x: np.ndarray, gain_fn, sr: int, n_fft: int = 1024, hop: int = 256, block: int = 256
) -> np.ndarray:
    """Time-varying filter: multiply each Hann STFT frame by gain_fn(frame centre times, bin freqs)."""
    n, overlap = len(x), n_fft // hop
    padded = np.pad(x, (n_fft, n_fft))  # every kept sample is covered by `overlap` frames
    n_frames = (len(padded) - n_fft) // hop + 1
    window, freqs = np.hanning(n_fft + 1)[:-1], np.fft.rfftfreq(n_fft, 1 / sr)
    out = np.zeros((n_frames + overlap, hop))
    for f0 in range(0, n_frames, block):
        frames = np.arange(f0, min(f0 + block, n_frames))
        segments = padded[frames[:, None] * hop + np.arange(n_fft)] * window
        spectrum = np.fft.rfft(segments, axis=1) * gain_fn((frames * hop - n_fft // 2) / sr, freqs)
        filtered = (np.fft.irfft(spectrum, n_fft, axis=1) * window).reshape(len(frames), overlap, hop)
        for j in range(overlap):
            out[f0 + j : f0 + j + len(frames)] += filtered[:, j]
    norm = np.sum(window.reshape(overlap, hop) ** 2, axis=0)  # constant overlap-add gain per phase
    return (out.reshape(-1) / np.tile(norm, n_frames + overlap))[n_fft : n_fft + n]


def _bandpass(x: np.ndarray, sr: int, low: float, high: float) -> np.ndarray:
    """Zero-phase 4th-order-like band-pass in the frequency domain (low=0: low-pass)."""
    size = _fft_size(len(x) + 64)  # a little zero padding keeps the circular wrap-around negligible
    freqs = np.fft.rfftfreq(size, 1 / sr)
    gain = 1 / np.sqrt(1 + (freqs / high) ** 8)
    if low > 0:
        gain /= np.sqrt(1 + (low / np.maximum(freqs, 1e-3)) ** 8)
    return np.fft.irfft(np.fft.rfft(x, size) * gain, size)[: len(x)]


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    size = _fft_size(len(x) + len(h) - 1)
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast for numpy's FFT, much less padding than a power of two)."""
    best, p5 = 1 << max(0, n - 1).bit_length(), 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            best = min(best, p35 << max(0, math.ceil(math.log2(n / p35))))
            p35 *= 3
        p5 *= 5
    return best


def _room_impulse(rng, sr: int) -> tuple[np.ndarray, float]:
    """Stereo decorrelated exponentially decaying noise (unit energy per channel) and its RT60."""
    rt60 = rng.uniform(0.3, 1.2)
    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal((2, len(t))) * np.exp(-6.9 * t / rt60)
    ir[:, : int(rng.uniform(0.005, 0.03) * sr)] = 0.0  # pre-delay
    return ir / np.sqrt(np.sum(ir**2, axis=1, keepdims=True)), rt60


def _add_reverb(stereo: np.ndarray, ir: np.ndarray, wet: float) -> np.ndarray:
    if not stereo.any():
        return stereo
    return np.stack([stereo[c] + wet * _fft_convolve(stereo[c], ir[c]) for c in range(2)])


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    angle = (pan + 1) * np.pi / 4  # constant power, pan in [-1, 1]
    return np.stack([np.cos(angle) * mono, np.sin(angle) * mono])


def _fade(y: np.ndarray, n_in: int, n_out: int) -> np.ndarray:
    n_in, n_out = min(n_in, len(y) // 2), min(n_out, len(y) // 2)
    y[:n_in] *= np.linspace(0, 1, n_in, endpoint=False)
    y[len(y) - n_out :] *= np.linspace(1, 0, n_out)
    return y


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Hann-window moving average along axis 0, same length (edges held)."""
    if width < 3:
        return x
    w = np.hanning(width) / np.hanning(width).sum()
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (x.ndim - 1)
    padded = np.pad(x, pad, mode="edge")
    return np.apply_along_axis(lambda col: np.convolve(col, w, mode="valid"), 0, padded)


def _slow_noise(rng, n: int, rate: float, period_s: float) -> np.ndarray:
    """Smooth random curve in about [-1, 1], changing every ~period_s seconds."""
    knots = rng.uniform(-1, 1, int(n / rate / period_s) + 2)
    return np.interp(np.arange(n) / rate / period_s, np.arange(len(knots)), knots)


def _seconds(n: int, sr: int) -> np.ndarray:
    """Time axis of an n-sample note or sample, float32 (fast transcendental functions; notes are short)."""
    return np.arange(n, dtype=np.float32) / np.float32(sr)


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _peak(x: np.ndarray) -> float:
    return float(np.abs(x).max())
