"""sepray.scoring on folder trees of real WAVs (the shared MUSDB excerpt, written with sepray.audio)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sepray.audio import read_audio, write_audio
from sepray.metrics import median_sdr, sdr_frames, utterance_sdr
from sepray.scoring import METRIC, ScoringError, format_table, score_folders

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXCERPT = SHARED_DATA / "musdb18hq-sample" / "train" / "Music Delta - 80s Rock"
RATE = 44100


@pytest.fixture(scope="module")
def stems() -> dict[str, torch.Tensor]:
    if not EXCERPT.is_dir():
        pytest.skip(f"shared MUSDB excerpt not found at {EXCERPT}")
    audio = {
        name: read_audio(EXCERPT / f"{name}.wav")[0]
        for name in ("mixture", "vocals", "drums", "bass", "other")
    }
    audio["accompaniment"] = audio["drums"] + audio["bass"] + audio["other"]
    return audio


@pytest.fixture
def trees(tmp_path, stems) -> tuple[Path, Path]:
    """Two songs (3 s and 2.5 s of the excerpt) with references and imperfect estimates, plus unmatched songs."""
    refs, ests = tmp_path / "references", tmp_path / "estimates"
    noise = 0.01 * torch.randn(stems["mixture"].shape, generator=torch.Generator().manual_seed(0))
    for song, length in (("song-a", 3 * RATE), ("song-b", int(2.5 * RATE))):
        clip = {name: audio[:, :length] for name, audio in stems.items()}
        write_audio(refs / song / "vocals.wav", clip["vocals"], RATE)
        write_audio(refs / song / "accompaniment.wav", clip["accompaniment"], RATE)
        write_audio(refs / song / "mixture.wav", clip["mixture"], RATE)  # ignored: the input, not a source
        write_audio(refs / song / "drums.wav", clip["drums"], RATE)  # no estimate: not scored
        write_audio(ests / song / "vocals.wav", clip["mixture"] / 2, RATE)
        accompaniment = clip["mixture"] - 0.8 * clip["vocals"] + noise[:, :length]
        write_audio(ests / song / "accompaniment.wav", accompaniment, RATE)
    write_audio(refs / "only-reference" / "vocals.wav", stems["vocals"][:, :RATE], RATE)
    write_audio(ests / "only-estimate" / "vocals.wav", stems["vocals"][:, :RATE], RATE)
    return refs, ests


def _read_song(folder: Path, sources=("vocals", "accompaniment")) -> torch.Tensor:
    return torch.stack([read_audio(folder / f"{source}.wav")[0] for source in sources])  # (S, C, T)


def test_scores_match_metrics_and_json(trees, tmp_path):
    refs, ests = trees
    json_path = tmp_path / "out" / "scores.json"
    result = score_folders(refs, ests, json_path=json_path)

    assert json.loads(json_path.read_text()) == result
    assert result["metric"] == METRIC
    assert list(result["songs"]) == ["song-a", "song-b"]
    assert result["unscored_songs"] == {
        "reference_only": ["only-reference"],
        "estimate_only": ["only-estimate"],
    }
    assert result["notes"] == []
    per_song = {}
    for song, scores in result["songs"].items():
        assert list(scores) == ["vocals", "accompaniment"]  # drums has no estimate, mixture is ignored
        references, estimates = _read_song(refs / song), _read_song(ests / song)
        frames = sdr_frames(references, estimates, RATE)
        assert frames.shape == (2, 3 if song == "song-a" else 2)  # 2.5 s: the partial frame is dropped
        for i, source in enumerate(scores):
            assert scores[source]["frames"] == pytest.approx(frames[i].tolist(), abs=1e-12)
            assert scores[source]["sdr"] == pytest.approx(median_sdr(frames)[i], abs=1e-12)
            assert scores[source]["utterance_sdr"] == pytest.approx(
                utterance_sdr(references, estimates)[i], abs=1e-12
            )
        per_song[song] = {source: scores[source]["sdr"] for source in scores}
    for source in ("vocals", "accompaniment"):
        expected = float(np.median([per_song["song-a"][source], per_song["song-b"][source]]))
        assert result["median"][source] == pytest.approx(expected, abs=1e-12)
    assert result["median"]["accompaniment"] > 10 > result["median"]["vocals"]

    table = format_table(result)
    assert table.splitlines()[0].startswith(METRIC)
    assert "song-a" in table and "median (2 songs)" in table and f"{result['median']['vocals']:.2f}" in table
    assert format_table(result, "utterance_sdr").startswith("utterance sdr")


def test_silent_frames_are_null_and_lengths_follow_the_reference(trees):
    refs, ests = trees
    vocals, _ = read_audio(ests / "song-a" / "vocals.wav")
    vocals[:, RATE : 2 * RATE] = 0.0  # a silent estimate frame: NaN for every source of the song
    write_audio(ests / "song-a" / "vocals.wav", vocals, RATE)
    accompaniment, _ = read_audio(ests / "song-b" / "accompaniment.wav")
    write_audio(ests / "song-b" / "accompaniment.wav", accompaniment[:, :-1000], RATE)  # 1000 samples short

    result = score_folders(refs, ests)
    for source in ("vocals", "accompaniment"):
        frames = result["songs"]["song-a"][source]["frames"]
        assert frames[1] is None and None not in (frames[0], frames[2])
    assert (
        len(result["notes"]) == 1
        and "accompaniment.wav" in result["notes"][0]
        and "zero-padded" in result["notes"][0]
    )
    padded = torch.nn.functional.pad(accompaniment[:, :-1000], (0, 1000))
    estimates = torch.stack([read_audio(ests / "song-b" / "vocals.wav")[0], padded])
    expected = sdr_frames(_read_song(refs / "song-b"), estimates, RATE)
    assert result["songs"]["song-b"]["accompaniment"]["frames"] == pytest.approx(
        expected[1].tolist(), abs=1e-12
    )


def test_perfect_estimate_is_json_safe(trees, tmp_path):
    refs, ests = trees
    for source in ("vocals", "accompaniment"):
        (ests / "song-a" / f"{source}.wav").write_bytes((refs / "song-a" / f"{source}.wav").read_bytes())
    result = score_folders(refs, ests, json_path=tmp_path / "scores.json")
    assert result["songs"]["song-a"]["vocals"]["sdr"] == "inf"
    assert math.isfinite(
        result["songs"]["song-a"]["vocals"]["utterance_sdr"]
    )  # the challenge's delta bounds it
    json.loads((tmp_path / "scores.json").read_text())  # strict JSON: no NaN / Infinity tokens
    assert "inf" in format_table(result)


def _one_line_error(excinfo, *names: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_no_common_song(tmp_path, stems):
    write_audio(tmp_path / "refs" / "a" / "vocals.wav", stems["vocals"][:, :RATE], RATE)
    write_audio(tmp_path / "ests" / "b" / "vocals.wav", stems["vocals"][:, :RATE], RATE)
    with pytest.raises(ScoringError) as excinfo:
        score_folders(tmp_path / "refs", tmp_path / "ests")
    assert isinstance(excinfo.value, ValueError)
    _one_line_error(excinfo, str(tmp_path / "ests"), "no song folder in common")
    with pytest.raises(ScoringError, match="no such folder"):
        score_folders(tmp_path / "refs", tmp_path / "missing")


def test_no_common_source(tmp_path, stems):
    write_audio(tmp_path / "refs" / "a" / "vocals.wav", stems["vocals"][:, :RATE], RATE)
    write_audio(tmp_path / "ests" / "a" / "vocal.wav", stems["vocals"][:, :RATE], RATE)
    with pytest.raises(ScoringError) as excinfo:
        score_folders(tmp_path / "refs", tmp_path / "ests")
    _one_line_error(excinfo, str(tmp_path / "ests" / "a"), "vocal")


def test_sample_rate_and_channel_mismatch(trees):
    refs, ests = trees
    estimate = ests / "song-b" / "vocals.wav"
    audio, _ = read_audio(estimate)
    write_audio(estimate, audio, 22050)
    with pytest.raises(ScoringError) as excinfo:
        score_folders(refs, ests)
    assert isinstance(excinfo.value, ValueError)
    _one_line_error(excinfo, str(estimate), "22050 Hz", "44100 Hz")

    write_audio(estimate, audio[:1], RATE)
    with pytest.raises(ScoringError) as excinfo:
        score_folders(refs, ests)
    _one_line_error(excinfo, str(estimate), "channel")
