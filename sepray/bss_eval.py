"""BSS Eval v3 over a whole clip (``bss_eval_sources``), NSDR, and the length-weighted GNSDR / GSIR / GSAR.

This is the metric of the MIR-1K / iKala literature (Huang et al. 2014/15, Park et al. 2018): BSS Eval 3.0's
``bss_eval_sources`` as in the MATLAB toolbox and ``mir_eval.separation.bss_eval_sources``. An estimate ``e``
of reference ``s_j`` (all mono, same length ``T``) is split with least-squares projections, in signals of
``T + L - 1`` samples (``L = 512`` filter taps):

* ``P_j e``: projection onto the ``L`` delayed copies of ``s_j`` (a time-invariant distortion filter of the
  target) = the target part ``s_target`` (BSS Eval's ``s_true + e_spat``);
* ``P e``: projection onto the delayed copies of every reference; ``e_interf = P e - P_j e``,
  ``e_artif = e - P e``;
* ``SDR = 10 log10(|P_j e|^2 / |e - P_j e|^2)``, ``SIR = 10 log10(|P_j e|^2 / |e_interf|^2)``,
  ``SAR = 10 log10(|P e|^2 / |e_artif|^2)``.

NSDR = SDR(estimate) - SDR(mixture as the estimate, same reference); GNSDR / GSIR / GSAR are the means over
clips of NSDR / SIR / SAR weighted by clip length (`length_weighted_mean`).

How it is computed (the numbers are mir_eval's within 4e-11 dB on the benchmark's clips and on 100 MIR-1K clips;
the test asserts 0.01 dB on 20 varied clips): every reference and estimate is transformed once, in blocks
(`_short_lag_correlations`: 8192-point real FFTs), and only the cross-correlations at lags ``-(L-1)..L-1`` are
formed; they give the Gram matrices (block Toeplitz) and the right-hand sides;
each Gram matrix is factored once per clip (Cholesky) and solved for every estimate at once (and the mixture,
for NSDR). The energies come from the solved filters as quadratic forms (``|S c|^2 = c^T G c``,
``<e, S c> = d^T c``), so no filtered signal is ever built. mir_eval instead rebuilds the Gram matrix for
every (estimate, reference) pair and filters in the time domain; the permutation search costs nothing extra
here (every pair's filters come from the same factorizations).

Permutation: mir_eval's default (``compute_permutation=True``, as the BSS Eval toolbox) matches estimates to
references by the best mean SIR. sepray knows which estimate is which source, so `bss_eval_sources` keeps
the given order by default (``permutation=False``, i.e. mir_eval with ``compute_permutation=False``); the
two differ only when a separator's vocals estimate is closer to the accompaniment than to the vocals, where
the toolbox would swap them and flatter it. ``permutation=True`` reproduces the toolbox's choice.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.linalg
from threadpoolctl import threadpool_limits

from sepray.names import BSS_GLOBALS

FILTER_LENGTH = 512
"""Taps of the allowed time-invariant distortion filter (BSS Eval 3.0, mir_eval)."""


@dataclass(frozen=True)
class BssEvalScores:
    """Per-reference scores in dB, arrays (sources,) float64.

    ``perm[j]`` is the estimate scored against reference ``j`` (``0..S-1`` unless ``permutation=True``).
    ``mix_sdr`` is the SDR of the mixture as the estimate of each reference (None without a mixture);
    ``nsdr = sdr - mix_sdr``. +inf where an error term is exactly zero (or rounds below zero); NaN for a silent
    estimate.
    """

    sdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    perm: np.ndarray
    mix_sdr: np.ndarray | None = None

    @property
    def nsdr(self) -> np.ndarray:
        if self.mix_sdr is None:
            raise ValueError("NSDR needs the mixture: pass mixture= to bss_eval_sources")
        return self.sdr - self.mix_sdr


def bss_eval_sources(
    references,
    estimates,
    mixture=None,
    permutation: bool = False,
    filter_length: int = FILTER_LENGTH,
) -> BssEvalScores:
    """BSS Eval v3 SDR / SIR / SAR of whole mono clips (mir_eval's ``bss_eval_sources`` semantics).

    Args:
        references: (sources, time) true sources; none may be silent (all zeros).
        estimates: (sources, time) estimates, in the references' order.
        mixture: optional (time,) mixture: also scored as the estimate of every reference (``mix_sdr``, NSDR).
        permutation: match estimates to references by the best mean SIR (mir_eval's default) instead of
            keeping the given order.
        filter_length: distortion filter taps (512 in BSS Eval v3).

    Returns:
        `BssEvalScores`, arrays (sources,).

    Raises:
        ValueError: wrong shapes, non-finite samples, fewer samples than ``filter_length``, or a silent reference.
    """
    refs = _as_2d(references, "references")
    ests = _as_2d(estimates, "estimates")
    if refs.shape != ests.shape:
        raise ValueError(
            f"references {refs.shape} and estimates {ests.shape} differ (shapes are (sources, time))"
        )
    n_sources, length = refs.shape
    if n_sources == 0 or length < filter_length:
        raise ValueError(
            f"need at least one source of at least {filter_length} samples, got shape {refs.shape}"
        )
    signals = ests
    if mixture is not None:
        mix = _as_2d(np.asarray(_to_numpy(mixture)).reshape(1, -1), "mixture")
        if mix.shape[1] != length:
            raise ValueError(f"mixture has {mix.shape[1]} samples, references have {length}")
        signals = np.concatenate([ests, mix])  # the mixture is one more estimate (last column)
    silent = ~refs.any(axis=1)
    if silent.any():
        raise ValueError(
            f"reference source {int(np.argmax(silent))} is silent (all zeros): BSS Eval is undefined"
        )

    with threadpool_limits(limits=1, user_api="blas"):
        sdr, sir, sar = _scores(refs, signals, filter_length)  # (S, K) each: reference j, estimate k
    n_est = ests.shape[0]
    perm = _best_permutation(sir[:, :n_est]) if permutation else np.arange(n_sources)
    rows = np.arange(n_sources)
    return BssEvalScores(
        sdr=sdr[rows, perm].copy(),
        sir=sir[rows, perm].copy(),
        sar=sar[rows, perm].copy(),
        perm=perm,
        mix_sdr=sdr[:, n_est].copy() if mixture is not None else None,
    )


def _scores(refs: np.ndarray, signals: np.ndarray, filter_length: int) -> tuple[np.ndarray, ...]:
    """SDR, SIR, SAR of every signal against every reference -> three (S, K) arrays.

    BLAS runs on one thread here (the caller's limit): the factorizations are 1024 x 1024 for two sources,
    too small to gain much from threads, and BLAS threads competing with other work on a busy machine made a
    clip several times slower (mir_eval too: 12 s -> 100 s for 20 short clips on this loaded 2-core machine).
    """
    gram, rhs = _gram_and_rhs(refs, signals, filter_length)  # (S*L, S*L), (S*L, K)
    energy = np.einsum("kt,kt->k", signals, signals)  # (K,) |e|^2
    factor = _cholesky(gram)  # None when not numerically positive definite
    full = _solve(
        gram, rhs, factor
    )  # (S*L, K): the filters projecting each signal onto every reference's delays
    gram_full = gram @ full  # (S*L, K)
    projected = np.einsum("ik,ik->k", full, gram_full)  # (K,) |P e|^2
    artifacts = energy - 2.0 * np.einsum("ik,ik->k", rhs, full) + projected  # (K,) |e - P e|^2
    target, residual, interference = _per_reference_terms(
        gram, rhs, gram_full, energy, projected, filter_length, factor
    )

    sdr = _db(target, residual)
    return sdr, _db(target, interference), np.broadcast_to(_db(projected, artifacts), sdr.shape)


def length_weighted_mean(values: Iterable[float], lengths: Iterable[float]) -> float:
    """``sum(length * value) / sum(length)`` over the clips whose value is not NaN (GNSDR, GSIR, GSAR).

    An infinite value makes the mean infinite (it is a real score: an error term that is exactly zero); NaN
    when no clip has a value.
    """
    pairs = [(float(v), float(w)) for v, w in zip(values, lengths, strict=True) if not math.isnan(float(v))]
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return float("nan")
    if any(math.isinf(v) for v, _ in pairs):
        return math.fsum(v for v, _ in pairs if math.isinf(v))  # +inf, -inf, or NaN when both occur
    return math.fsum(v * w for v, w in pairs) / total


def score_clip(sources, references, estimates, mixture) -> dict[str, dict[str, float]]:
    """BSS Eval v3 of one clip with NSDR, multichannel audio downmixed to mono (the mean of its channels).

    Args:
        sources: names of the sources, in the order of the first axis.
        references: (sources, channels, time).
        estimates: (sources, channels, time), the same shape, in the same order (fixed order, no permutation).
        mixture: (channels, time).

    Returns:
        ``{source: {"sdr", "sir", "sar", "nsdr", "mix_sdr"}}`` (float dB). Every value is NaN when a reference
        is silent (BSS Eval is undefined); a silent estimate's SDR / SIR / SAR / NSDR are NaN.
    """
    refs = np.asarray(_to_numpy(references), dtype=np.float64).mean(axis=1)  # (S, T)
    ests = np.asarray(_to_numpy(estimates), dtype=np.float64).mean(axis=1)  # (S, T)
    mix = np.asarray(_to_numpy(mixture), dtype=np.float64).mean(axis=0)  # (T,)
    if not refs.any(axis=1).all():
        nan = float("nan")
        return {s: dict.fromkeys(("sdr", "sir", "sar", "nsdr", "mix_sdr"), nan) for s in sources}
    scores = bss_eval_sources(refs, ests, mixture=mix)
    return {
        source: {
            "sdr": float(scores.sdr[i]),
            "sir": float(scores.sir[i]),
            "sar": float(scores.sar[i]),
            "nsdr": float(scores.nsdr[i]),
            "mix_sdr": float(scores.mix_sdr[i]),
        }
        for i, source in enumerate(sources)
    }


def global_scores(
    songs: dict[str, dict[str, dict[str, float]]], seconds: dict[str, float]
) -> dict[str, dict]:
    """GNSDR / GSIR / GSAR (and GSDR) per source: `length_weighted_mean` over songs of each song's NSDR / SIR /
    SAR / SDR (`score_clip` results), weighted by ``seconds[song]`` -> ``{"gnsdr": {source: dB}, ...}``."""
    sources = list(dict.fromkeys(src for scores in songs.values() for src in scores))
    out: dict[str, dict] = {}
    for name, key in GLOBAL_SCORES.items():
        out[name] = {
            src: length_weighted_mean(
                [songs[song][src][key] for song in songs if src in songs[song]],
                [seconds[song] for song in songs if src in songs[song]],
            )
            for src in sources
        }
    return out


GLOBAL_SCORES = dict(zip(BSS_GLOBALS, ("nsdr", "sir", "sar", "sdr"), strict=True))
"""The length-weighted means over clips (GNSDR, ...) -> the per-clip score each averages."""


# ----------------------------------------------------------------------------------------------------------
# internals


def _gram_and_rhs(refs: np.ndarray, signals: np.ndarray, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrix of the delayed references and their inner products with each signal.

    ``gram[i*L + a, j*L + b] = <s_i delayed by a, s_j delayed by b> = r_ij[b - a]`` and
    ``rhs[i*L + a, k] = <s_i delayed by a, e_k> = c_ik[-a]``, with ``r_ij[m] = sum_t s_i[t + m] s_j[t]`` and
    ``c`` likewise against ``e_k`` (`_short_lag_correlations`). Returns (S*L, S*L) and (S*L, K).
    """
    n_sources = refs.shape[0]
    lags = _short_lag_correlations(refs, np.concatenate([refs, signals]), taps)  # (S, S + K, 2L - 1)
    index = np.arange(taps)[None, :] - np.arange(taps)[:, None] + taps - 1  # (L, L): lag b - a
    gram = np.empty((n_sources * taps, n_sources * taps))
    for i in range(n_sources):
        for j in range(n_sources):
            gram[i * taps : (i + 1) * taps, j * taps : (j + 1) * taps] = lags[i, j][index]
    rhs = lags[:, n_sources:, taps - 1 :: -1]  # (S, K, L): lags 0, -1, ..., -(L-1)
    return gram, np.ascontiguousarray(rhs.transpose(0, 2, 1).reshape(n_sources * taps, -1))


SEGMENT_FFT = 8192  # FFT size of the block-wise correlations (cache-sized; 14 % overlap at L = 512)


def _short_lag_correlations(xs: np.ndarray, ys: np.ndarray, taps: int) -> np.ndarray:
    """``out[i, k, m + L - 1] = sum_t x_i[t + m] y_k[t]`` for lags ``|m| < L`` (zero outside the signals):
    (X, T), (Y, T) -> (X, Y, 2L - 1).

    Only short lags are needed, so the sum over ``t`` is cut into blocks of ``B`` samples: each block of
    ``y_k`` is correlated with the stretch of ``x_i`` it can reach (``B + 2L - 2`` samples) by FFTs of
    ``M >= B + 2L - 2`` points, where the circular correlation equals the linear one at those lags; the
    products are summed over blocks before a single inverse FFT per pair. Cost ~ (X + Y) T log M instead of
    the (X + X*Y) T log T of whole-signal transforms.
    """
    length = xs.shape[1]
    reach = 2 * (taps - 1)
    if length + reach <= SEGMENT_FFT:
        n_fft, block = scipy.fft.next_fast_len(length + reach, real=True), length
    else:
        n_fft, block = SEGMENT_FFT, SEGMENT_FFT - reach
    n_blocks = -(-length // block)
    ys_padded = np.zeros((ys.shape[0], n_blocks * block))
    ys_padded[:, :length] = ys
    xs_padded = np.zeros((xs.shape[0], n_blocks * block + reach))
    xs_padded[:, taps - 1 : taps - 1 + length] = xs
    x_segments = np.lib.stride_tricks.sliding_window_view(xs_padded, block + reach, axis=1)[:, ::block]
    x_spectra = scipy.fft.rfft(x_segments, n_fft, axis=2)  # (X, n, F): x[nB - (L-1) + u]
    y_spectra = scipy.fft.rfft(ys_padded.reshape(ys.shape[0], n_blocks, block), n_fft, axis=2)  # (Y, n, F)
    # sum over blocks of X_seg * conj(Y_blk), per frequency: (F, X, n) @ (F, n, Y) -> (F, X, Y)
    cross = np.matmul(x_spectra.transpose(2, 0, 1), y_spectra.conj().transpose(2, 1, 0))
    corr = scipy.fft.irfft(cross.transpose(1, 2, 0), n_fft, axis=2)  # (X, Y, M): index = m + L - 1
    return corr[:, :, : 2 * taps - 1]


def _per_reference_terms(
    gram: np.ndarray,
    rhs: np.ndarray,
    gram_full: np.ndarray,
    energy: np.ndarray,
    projected: np.ndarray,
    taps: int,
    factor: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each reference j and signal k, with ``c_jk`` the filter projecting e_k onto s_j's delays
    (``P_j e = S_j c_jk``) and ``c_k`` the one onto every reference (``gram_full = G c``):
    ``|P_j e|^2 = c_jk^T G_jj c_jk``, ``|e - P_j e|^2 = |e|^2 - 2 d_jk^T c_jk + |P_j e|^2`` and
    ``|P e - P_j e|^2 = |P e|^2 - 2 c_k^T G[:, j] c_jk + |P_j e|^2`` -> three (S, K) arrays.
    ``factor``: the full Gram matrix's Cholesky factor, whose leading block is G_00's."""
    n_sources = gram.shape[0] // taps
    target = np.empty((n_sources, rhs.shape[1]))
    residual = np.empty_like(target)
    interference = np.empty_like(target)
    for j in range(n_sources):
        block = slice(j * taps, (j + 1) * taps)
        own = gram[block, block]  # (L, L) G_jj
        own_factor = factor[block, block] if j == 0 and factor is not None else _cholesky(own)
        filt = _solve(own, rhs[block], own_factor)  # (L, K) c_jk
        target[j] = np.einsum("ak,ak->k", filt, own @ filt)
        residual[j] = energy - 2.0 * np.einsum("ak,ak->k", rhs[block], filt) + target[j]
        interference[j] = projected - 2.0 * np.einsum("ak,ak->k", gram_full[block], filt) + target[j]
    return target, residual, interference


def _cholesky(gram: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of a Gram matrix (only its lower triangle is meaningful); None when the matrix is
    not numerically positive definite (degenerate references)."""
    try:
        return scipy.linalg.cho_factor(gram, lower=True, check_finite=False)[0]
    except np.linalg.LinAlgError:
        return None


def _solve(gram: np.ndarray, rhs: np.ndarray, factor: np.ndarray | None) -> np.ndarray:
    """``gram^-1 rhs`` from its Cholesky factor; without one LU, else least squares, as mir_eval falls back."""
    if factor is not None:
        return scipy.linalg.cho_solve((factor, True), rhs, check_finite=False)
    try:
        return np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(gram, rhs, rcond=None)[0]


def _db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``10 log10(num / den)``; +inf where den <= 0 (an error term exactly zero, or rounded below it); NaN
    where both are zero (a silent estimate)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    out = np.full(num.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = den > 0
        out[positive] = 10.0 * np.log10(num[positive] / den[positive])
    out[(num <= 0) & (den <= 0)] = np.nan
    return out


def _best_permutation(sir: np.ndarray) -> np.ndarray:
    """``perm[j]`` = the estimate for reference j maximising the mean SIR (mir_eval's choice: the first of
    ``itertools.permutations`` order among equals). ``sir[j, k]``: reference j, estimate k."""
    n = sir.shape[0]
    scores = np.where(np.isnan(sir), -np.inf, sir)
    perms = list(itertools.permutations(range(n)))
    means = [np.mean(scores[np.arange(n), list(p)]) for p in perms]
    return np.asarray(perms[int(np.argmax(means))])


def _as_2d(x, what: str) -> np.ndarray:
    arr = np.asarray(_to_numpy(x), dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"expected {what} of shape (sources, time), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} must be finite (found NaN or inf)")
    return arr


def _to_numpy(x):
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        return x.detach().cpu().numpy()
    return x
