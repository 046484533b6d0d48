"""sepray.metrics against museval v4 (real MUSDB audio and synthetic edge cases) and closed forms."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sepray.audio import read_audio
from sepray.metrics import frame_bounds, median_sdr, sdr_frames, utterance_sdr

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXCERPT = SHARED_DATA / "musdb18hq-sample" / "train" / "Music Delta - 80s Rock"
TOLERANCE_DB = 1e-4


@pytest.fixture(scope="module")
def museval():
    try:
        import museval
    except Exception as exc:  # ImportError, or musdb/stempeg failing without an ffmpeg binary
        pytest.skip(
            f"museval unavailable ({type(exc).__name__}: {exc}); needs `pip install museval` and ffmpeg"
        )
    return museval


@pytest.fixture(scope="module")
def excerpt() -> dict[str, np.ndarray]:
    """The shared 7 s MUSDB18-HQ excerpt (44.1 kHz stereo): {stem: (2, T) float32}."""
    if not EXCERPT.is_dir():
        pytest.skip(f"shared MUSDB excerpt not found at {EXCERPT}")
    stems = {}
    for name in ("mixture", "vocals", "drums", "bass", "other"):
        audio, rate = read_audio(EXCERPT / f"{name}.wav")
        assert rate == 44100
        stems[name] = audio.numpy()
    return stems


def museval_sdr(museval, references, estimates, sample_rate, window=1.0, hop=1.0) -> np.ndarray:
    """museval v4 SDR of (S, C, T) arrays (museval wants (S, T, C))."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdr, _, _, _ = museval.evaluate(
            np.swapaxes(references, 1, 2),
            np.swapaxes(estimates, 1, 2),
            win=sample_rate * window,
            hop=sample_rate * hop,
        )
    return sdr


def assert_frames_match(expected: np.ndarray, actual: np.ndarray, atol: float = TOLERANCE_DB) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg="NaN frames differ")
    defined = ~np.isnan(expected)
    np.testing.assert_allclose(actual[defined], expected[defined], rtol=0, atol=atol)


def test_matches_museval_on_real_audio(museval, excerpt):
    references = np.stack([excerpt["vocals"], excerpt["drums"] + excerpt["bass"] + excerpt["other"]])
    noise = 0.01 * np.random.default_rng(0).standard_normal(excerpt["mixture"].shape).astype(np.float32)
    estimates = np.stack([excerpt["mixture"] / 2, excerpt["mixture"] - 0.8 * excerpt["vocals"] + noise])
    # Edge cases in one museval run (museval takes seconds): the vocals estimate is silent in frame 2 (so that
    # frame is NaN for both sources) and both estimates stop 0.3 s early (zero-padded, as museval does).
    estimates[0, :, 2 * 44100 : 3 * 44100] = 0.0
    estimates = estimates[:, :, : -int(0.3 * 44100)]
    assert references.shape[-1] % 44100 != 0  # 6.8 s: the trailing partial frame is dropped

    expected = museval_sdr(museval, references, estimates, 44100)
    actual = sdr_frames(references, estimates, 44100)

    assert actual.shape == (2, 6)
    assert np.isnan(actual[:, 2]).all() and not np.isnan(np.delete(actual, 2, axis=1)).any()
    assert_frames_match(expected, actual)
    assert_frames_match(
        expected, sdr_frames(torch.from_numpy(references), torch.from_numpy(estimates), 44100)
    )


def _noisy_pair(seed: int, sources=2, channels=1, length=3500):
    """Small synthetic references and estimates at 1 kHz (museval's cost grows with sources * channels)."""
    rng = np.random.default_rng(seed)
    references = rng.standard_normal((sources, channels, length)).astype(np.float32)
    estimates = references + 0.3 * rng.standard_normal(references.shape).astype(np.float32)
    return references, estimates


def test_silent_frames_are_nan_for_every_source(museval):
    references, estimates = _noisy_pair(1)
    references[0, :, 1000:2000] = 0.0  # silent reference in frame 1
    estimates[1, :, 2000:3000] = 0.0  # silent estimate in frame 2
    actual = sdr_frames(references, estimates, 1000)
    assert np.isnan(actual[:, 1:3]).all() and not np.isnan(actual[:, 0]).any()
    assert_frames_match(museval_sdr(museval, references, estimates, 1000), actual, atol=1e-9)


def test_museval_silence_rule_is_channel_sum(museval):
    """museval calls a frame silent when the channel *sum* is zero throughout, e.g. antiphase stereo."""
    references, estimates = _noisy_pair(2, sources=1, channels=2)
    references[0, 1, 1000:2000] = -references[0, 0, 1000:2000]
    references[0, :, 2000:3000] = 0.0
    references[0, 0, 2500] = 1e-3  # one non-zero sample: not silent, a very poor frame
    actual = sdr_frames(references, estimates, 1000)
    assert np.isnan(actual[:, 1]).all() and actual[0, 2] < -50
    assert_frames_match(museval_sdr(museval, references, estimates, 1000), actual, atol=1e-9)


@pytest.mark.parametrize(
    "length, estimate_length, window, hop, frames",
    [
        (3500, 3500, 1.0, 1.0, 3),  # trailing partial frame dropped
        (3500, 2500, 1.0, 1.0, 3),  # shorter estimate zero-padded
        (3500, 1800, 1.0, 1.0, 3),  # ... until its frames are all-zero: NaN
        (3500, 7000, 1.0, 1.0, 3),  # longer estimate truncated
        (3500, 3500, 1.0, 0.5, 6),  # overlapping frames
        (3500, 3500, 0.7, 0.45, 7),  # hop not dividing the window
        (3500, 3500, 1 / 3, 1 / 3, 10),  # 333.33-sample frames: museval floors each boundary
        (3000, 3000, 3.0, 3.0, 1),  # window == length: one frame
        (2500, 2500, 5.0, 5.0, 1),  # window > length: one frame over the whole, shorter, signal
    ],
)
def test_framing_matches_museval(museval, length, estimate_length, window, hop, frames):
    references, _ = _noisy_pair(3, sources=1, length=length)
    _, estimates = _noisy_pair(3, sources=1, length=max(length, estimate_length))
    estimates = estimates[:, :, :estimate_length]
    actual = sdr_frames(references, estimates, 1000, window, hop)
    assert actual.shape == (1, frames)
    assert_frames_match(museval_sdr(museval, references, estimates, 1000, window, hop), actual, atol=1e-9)


def test_three_channels_float64(museval):
    references, estimates = _noisy_pair(4, sources=1, channels=3, length=2345)
    references, estimates = references.astype(np.float64), estimates.astype(np.float64)
    actual = sdr_frames(references, estimates, 1000)
    assert_frames_match(museval_sdr(museval, references, estimates, 1000), actual, atol=1e-9)


def test_frame_is_closed_form_snr():
    references, estimates = _noisy_pair(5)
    r, e = references.astype(np.float64), estimates.astype(np.float64)
    expected = 10 * np.log10(
        (r[:, :, 1000:2000] ** 2).sum((1, 2)) / ((r - e)[:, :, 1000:2000] ** 2).sum((1, 2))
    )
    np.testing.assert_allclose(sdr_frames(references, estimates, 1000)[:, 1], expected, rtol=1e-12)


def test_perfect_estimate_is_infinite_and_whole_silent_source_is_nan():
    references, estimates = _noisy_pair(6)
    estimates[:, :, :1000] = references[:, :, :1000]
    frames = sdr_frames(references, estimates, 1000)
    assert np.isposinf(frames[:, 0]).all() and np.isfinite(frames[:, 1:]).all()
    estimates[1] = 0.0  # museval raises ValueError here; sepray gives NaN everywhere
    assert np.isnan(sdr_frames(references, estimates, 1000)).all()


def test_frame_bounds():
    starts, stops = frame_bounds(3500, 1000)
    assert starts.tolist() == [0, 1000, 2000] and stops.tolist() == [1000, 2000, 3000]
    starts, stops = frame_bounds(1000, 3, window=1 / 3, hop=1 / 3)  # 1-sample frames
    assert len(starts) == 1000 and (stops - starts == 1).all()
    with pytest.raises(ValueError, match="at least one sample"):
        frame_bounds(3500, 1000, window=0.0001)


def test_rejects_bad_input():
    references, estimates = _noisy_pair(7, channels=2)
    with pytest.raises(ValueError, match="sources, channels, time"):
        sdr_frames(references[0], estimates[0], 1000)
    with pytest.raises(ValueError, match="differ in sources or channels"):
        sdr_frames(references, estimates[:, :1], 1000)
    estimates[0, 0, 10] = np.nan
    with pytest.raises(ValueError, match="finite"):
        sdr_frames(references, estimates, 1000)


def test_median_sdr():
    frames = np.array([[1.0, np.nan, 3.0, 10.0], [np.nan] * 4, [np.inf, np.inf, 2.0, np.nan]])
    np.testing.assert_array_equal(median_sdr(frames), [3.0, np.nan, np.inf])


def test_utterance_sdr_closed_form():
    rng = np.random.default_rng(8)
    references = rng.standard_normal((2, 2, 5000))
    estimates = references + rng.standard_normal(references.shape) * np.array([0.1, 0.5])[:, None, None]
    signal = (references**2).sum((1, 2))
    distortion = ((references - estimates) ** 2).sum((1, 2))
    np.testing.assert_allclose(
        utterance_sdr(references, estimates), 10 * np.log10((signal + 1e-7) / (distortion + 1e-7)), rtol=1e-12
    )
    # close to 20 dB and 6 dB for noise at 0.1 and 0.5 of a unit-power signal
    np.testing.assert_allclose(utterance_sdr(references, estimates), [20.0, 6.02], atol=0.2)
    # delta bounds a perfect estimate and makes silence vs silence 0 dB
    perfect = utterance_sdr(references, references.copy())
    np.testing.assert_allclose(perfect, 10 * np.log10(1 + signal / 1e-7))
    assert (perfect > 100).all()
    silent = np.zeros((1, 2, 100))
    assert utterance_sdr(silent, silent)[0] == 0.0
    # torch input; shorter estimate zero-padded like sdr_frames
    short = torch.from_numpy(estimates[:, :, :4000])
    padded = np.concatenate([estimates[:, :, :4000], np.zeros((2, 2, 1000))], axis=-1)
    np.testing.assert_allclose(
        utterance_sdr(torch.from_numpy(references), short), utterance_sdr(references, padded)
    )
