"""Signal-to-distortion ratios (SDR) for source separation, in dB.

Two SDRs live here; every number sepray reports says which one it is:

- **museval v4 framewise SDR** (`sdr_frames`, summarised by `median_sdr`): what the field reports for MUSDB18
  (SiSEC 2018, BSSEval v4 via the `museval` package, 1 s windows and hop, median over the frames of a track).
  In BSSEval v4 the distortion filters are fitted on the whole track and only move energy between the
  ISR/SIR/SAR terms; the SDR of a frame is exactly ``10*log10(sum s^2 / sum (s - s_hat)^2)`` over the samples
  and channels of that frame. `sdr_frames` computes that directly (no filters) and reproduces museval's
  framing, silence and length rules, so it equals ``museval.evaluate(...)[0]`` up to rounding (~1e-14 dB) and
  runs orders of magnitude faster.
- **utterance SDR** (`utterance_sdr`): the Music Demixing (MDX 2021) / Sound Demixing (SDX 2023) challenge
  metric, ``10*log10((sum s^2 + delta) / (sum (s - s_hat)^2 + delta))`` over a whole track.

Arrays are ``(sources, channels, time)`` (sepray's layout; museval's is ``(sources, time, channels)``).
NumPy arrays and torch tensors are accepted; all arithmetic is float64.
"""

from __future__ import annotations

import math

import numpy as np

MDX_DELTA = 1e-7
"""The challenges' stabiliser, added to numerator and denominator (AIcrowd MDX starter kit; demucs `new_sdr`)."""

_BLOCK = 1 << 18  # samples per block when computing per-sample energies


def sdr_frames(
    references,
    estimates,
    sample_rate: int,
    window: float = 1.0,
    hop: float = 1.0,
) -> np.ndarray:
    """museval v4 framewise SDR in dB -> array (sources, frames).

    Equals the SDR of ``museval.evaluate(references.transpose(0, 2, 1), estimates.transpose(0, 2, 1),
    win=sample_rate * window, hop=sample_rate * hop)`` (mode "v4"), including its edge cases:

    - Length: estimates are zero-padded or truncated to the references' length (museval's `pad_or_truncate`).
    - Frames (museval's `Framing`, window/hop in samples ``w = sample_rate * window``, ``h = sample_rate *
      hop``, possibly fractional): if ``w < length`` there are ``floor((length - w + h) / h)`` frames, frame
      ``t`` spanning samples ``[floor(t*h), floor(min(t*h + w, length)))``, so a trailing partial frame is
      dropped; otherwise there is a single frame covering the whole (possibly shorter than ``w``) signal.
    - Per frame and source: ``10*log10(sum s^2 / sum (s - s_hat)^2)``, sums over the frame's samples and all
      channels; ``+inf`` where the estimate equals the reference exactly in the frame. museval gives +inf
      there when its projections cancel exactly (e.g. a perfect estimate of the whole signal), otherwise a
      rounding-noise figure of ~300-360 dB: the one place the two differ by more than rounding.
    - Silence: a frame is NaN for *every* source when any reference or any estimate is silent in it.
      "Silent" is museval's test: the sum over channels is exactly zero at every sample of the frame (so an
      all-zero source, but also a stereo source whose channels are exact negatives of each other).

    One deliberate difference: where a source is silent over the whole signal museval raises ValueError;
    here every frame is NaN, as the per-frame rule gives.

    Args:
        references: (sources, channels, time) true sources.
        estimates: (sources, channels, time') estimated sources, same sources and channels; any length.
        sample_rate: samples per second of both.
        window: frame length in seconds (museval: 1 s).
        hop: frame hop in seconds (museval: 1 s).

    Returns:
        float64 array (sources, frames).

    Raises:
        ValueError: wrong shapes, non-finite samples, empty signals, or a window/hop below one sample.
    """
    refs, ests = _prepare(references, estimates)
    n_sources, _, length = refs.shape
    starts, stops = frame_bounds(length, sample_rate, window, hop)

    # Per-sample energies summed over channels, with a zero column appended so that every frame boundary,
    # including ``length`` itself, is a valid `np.add.reduceat` index.
    ref_energy = np.zeros((n_sources, length + 1))
    err_energy = np.zeros((n_sources, length + 1))
    # museval's silence test, in the inputs' own dtype as museval does it: channel sum != 0 at some sample.
    active = np.zeros((2, n_sources, length + 1), dtype=bool)
    for begin in range(0, length, _BLOCK):  # blocks bound the float64 temporaries
        block = slice(begin, min(begin + _BLOCK, length))
        ref, est = refs[:, :, block], ests[:, :, block]  # (S, C, B)
        np.einsum("sct,sct->st", ref, ref, out=ref_energy[:, block], dtype=np.float64)
        error = np.subtract(est, ref, dtype=np.float64)  # (S, C, B)
        np.einsum("sct,sct->st", error, error, out=err_energy[:, block])
        np.not_equal(ref.sum(axis=1), 0, out=active[0, :, block])
        np.not_equal(est.sum(axis=1), 0, out=active[1, :, block])
    if not (np.isfinite(ref_energy.sum()) and np.isfinite(err_energy.sum())):
        raise ValueError("references and estimates must be finite (found NaN or inf, or energies overflow)")

    bounds = np.stack([starts, stops], axis=1).reshape(-1)  # s0, e0, s1, e1, ...: even entries are frames
    signal = np.add.reduceat(ref_energy, bounds, axis=-1)[:, ::2]  # (S, F)
    distortion = np.add.reduceat(err_energy, bounds, axis=-1)[:, ::2]  # (S, F)
    active_in_frame = np.logical_or.reduceat(active, bounds, axis=-1)[:, :, ::2]  # (2, S, F)
    silent_frame = ~active_in_frame.all(axis=(0, 1))  # (F,): some reference or estimate silent

    with np.errstate(divide="ignore", invalid="ignore"):
        sdr = np.where(distortion == 0, np.inf, 10.0 * np.log10(signal / distortion))
    sdr[:, silent_frame] = np.nan
    return sdr


def frame_bounds(
    length: int, sample_rate: int, window: float = 1.0, hop: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """museval's framing of ``length`` samples -> (starts, stops), int64 arrays (frames,), stop exclusive.

    Window and hop are in seconds; see `sdr_frames` for the rule. Raises ValueError when either is shorter
    than one sample or the signal is empty.
    """
    win = sample_rate * window  # samples, as museval receives them (may be fractional)
    step = sample_rate * hop
    if length < 1:
        raise ValueError("cannot frame an empty signal (0 samples)")
    if not (math.isfinite(win) and win >= 1 and math.isfinite(step) and step >= 1):
        raise ValueError(
            f"window and hop must be at least one sample: got window={window} s, hop={hop} s "
            f"at {sample_rate} Hz"
        )
    if win >= length:
        return np.array([0], dtype=np.int64), np.array([length], dtype=np.int64)
    n_frames = int(np.floor((length - win + step) / step))
    offsets = np.arange(n_frames) * step  # same float products as museval's ``current * hop``
    starts = np.floor(offsets).astype(np.int64)
    stops = np.floor(np.minimum(offsets + win, length)).astype(np.int64)
    return starts, stops


def median_sdr(frames) -> np.ndarray:
    """Median over frames, ignoring NaN frames: (sources, frames) -> (sources,) float64.

    Applied to `sdr_frames` this is museval's per-track SDR (pandas' median skips NaN the same way). A source
    whose frames are all NaN gets NaN (no warning).
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 2:
        raise ValueError(f"expected frames of shape (sources, frames), got {frames.shape}")
    result = np.full(frames.shape[0], np.nan)
    defined = ~np.isnan(frames).all(axis=1)
    if frames.shape[1] and defined.any():
        result[defined] = np.nanmedian(frames[defined], axis=1)
    return result


def utterance_sdr(references, estimates, delta: float = MDX_DELTA) -> np.ndarray:
    """Utterance SDR in dB (MDX 2021 / SDX 2023 challenge definition) -> (sources,) float64.

    ``10*log10((sum s^2 + delta) / (sum (s - s_hat)^2 + delta))``, sums over all channels and samples of the
    track. ``delta = 1e-7`` is the challenges' value (added to both terms; AIcrowd starter kit, reproduced as
    `new_sdr` in demucs' evaluate.py). It bounds a perfect estimate at ``10*log10(1 + sum s^2 / delta)`` and
    gives 0 dB for a silent reference with a silent estimate. Computed in float64 (the challenge used the
    inputs' precision). Estimates are zero-padded or truncated to the references' length, as in `sdr_frames`.

    Args:
        references: (sources, channels, time).
        estimates: (sources, channels, time') with the same sources and channels.
    """
    refs, ests = _prepare(references, estimates)
    signal = np.einsum("sct,sct->s", refs, refs, dtype=np.float64)
    error = np.subtract(ests, refs, dtype=np.float64)
    distortion = np.einsum("sct,sct->s", error, error)
    return 10.0 * np.log10((signal + delta) / (distortion + delta))


def _prepare(references, estimates) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and match the estimates' length to the references' (zero-pad or truncate, as museval)."""
    refs = _to_numpy(references)
    ests = _to_numpy(estimates)
    if refs.ndim != 3 or ests.ndim != 3:
        raise ValueError(
            "expected references and estimates of shape (sources, channels, time), "
            f"got {refs.shape} and {ests.shape}"
        )
    if refs.shape[:2] != ests.shape[:2]:
        raise ValueError(
            f"references {refs.shape} and estimates {ests.shape} differ in sources or channels "
            "(shapes are (sources, channels, time))"
        )
    if refs.shape[0] == 0 or refs.shape[1] == 0 or refs.shape[2] == 0:
        raise ValueError(f"empty references: shape {refs.shape} (sources, channels, time)")
    length = refs.shape[2]
    if ests.shape[2] > length:
        ests = ests[:, :, :length]
    elif ests.shape[2] < length:
        ests = np.pad(ests, ((0, 0), (0, 0), (0, length - ests.shape[2])))
    return refs, ests


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def trivial_estimates(mix):
    """The trivial estimates every separator is compared with: the mixture itself and half of it.

    ``mix`` is the mixture broadcast to the references' shape (tensor or array); returns {name: estimate} with
    the names of :data:`sepray.names.BASELINES`.
    """
    return {"mix": mix, "halfmix": 0.5 * mix}
