"""sepray.scoring on folder trees of real WAVs (the shared MUSDB excerpt, written with sepray.audio)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sepray.audio import read_audio, write_audio
from sepray.cli import main
from sepray.metrics import median_sdr, sdr_frames, utterance_sdr
from sepray.scoring import METRIC, UTTERANCE_METRIC, ScoringError, format_table, score_folders

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
    assert result["notes"] == [
        "not scored: only-reference (reference song folders with no estimate folder)",
        "not scored: only-estimate (estimate song folders with no reference folder)",
        "not scored: drums (reference sources with no estimate in any song)",
    ]
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
    (note,) = [note for note in result["notes"] if "zero-padded" in note]
    assert str(ests / "song-b" / "accompaniment.wav") in note
    assert note in format_table(result).split("notes:")[1]  # the note reaches the console
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


def test_table_shows_utterance_sdr_beside_sdr_and_the_notes(trees):
    refs, ests = trees
    result = score_folders(refs, ests)
    lines = format_table(result).splitlines()
    assert lines[0] == f"{METRIC}, dB" and UTTERANCE_METRIC in lines[1]
    assert lines[2].split() == ["song", "vocals", "vocals", "utt", "accompaniment", "accompaniment", "utt"]
    row = lines[4].split()
    scores = result["songs"]["song-a"]
    assert row == [
        "song-a",
        *(
            f"{scores[src][key]:.2f}"
            for src in ("vocals", "accompaniment")
            for key in ("sdr", "utterance_sdr")
        ),
    ]
    median = lines[lines.index(next(x for x in lines if x.startswith("median")))].split()
    assert median[-1] == f"{result['median_utterance_sdr']['accompaniment']:.2f}"
    assert lines[-4:] == ["notes:", *(f"  {note}" for note in result["notes"])]


def test_a_missing_estimate_source_is_an_error(trees):
    refs, ests = trees
    (ests / "song-b" / "accompaniment.wav").unlink()
    with pytest.raises(ScoringError) as excinfo:
        score_folders(refs, ests)
    _one_line_error(excinfo, f"{ests / 'song-b'}: missing accompaniment.wav", str(refs / "song-b"))


def test_a_source_missing_from_every_estimate_is_an_error_when_it_is_seprays(trees):
    """vocals / accompaniment are what sepray estimates: missing from all estimates is still missing."""
    refs, ests = trees
    for song in ("song-a", "song-b"):
        (ests / song / "vocals.wav").unlink()
    with pytest.raises(ScoringError) as excinfo:
        score_folders(refs, ests)
    _one_line_error(excinfo, f"{ests / 'song-a'}: missing vocals.wav")


def test_a_reference_missing_a_scored_source_is_an_error(trees):
    refs, ests = trees
    (refs / "song-a" / "accompaniment.wav").unlink()
    with pytest.raises(ScoringError) as excinfo:
        score_folders(refs, ests)
    _one_line_error(excinfo, f"{refs / 'song-a'}: missing accompaniment.wav")


def test_a_silent_reference_is_explained(trees, capsys):
    refs, ests = trees
    silent = refs / "song-a" / "vocals.wav"
    audio, _ = read_audio(silent)
    write_audio(silent, torch.zeros_like(audio), RATE)
    result = score_folders(refs, ests)
    assert result["songs"]["song-a"]["vocals"]["sdr"] is None
    assert result["songs"]["song-a"]["accompaniment"]["sdr"] is None  # museval: a silent source blanks all
    (note,) = [note for note in result["notes"] if note.startswith("song-a")]
    assert "SDR undefined ('-') for vocals, accompaniment" in note and f"silent throughout: {silent}" in note
    assert main(["score", str(refs), str(ests)]) == 0
    out = capsys.readouterr().out
    assert note in out.split("notes:")[1]


def test_cli_checks_the_json_path_before_scoring(trees, tmp_path, capsys, monkeypatch):
    refs, ests = trees
    folder = tmp_path / "scores"
    folder.mkdir()

    def must_not_score(*args):
        raise AssertionError("scored before checking the JSON path")

    monkeypatch.setattr("sepray.scoring._score_song", must_not_score)
    assert main(["score", str(refs), str(ests), "--json", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sepray: error: {folder}: is a directory, expected a path for the JSON file"
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    assert main(["score", str(refs), str(ests), "--json", str(a_file / "scores.json")]) == 2
    assert f"{a_file}: is not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "mine" and list(folder.iterdir()) == []


def test_cli_prints_every_note_and_reports_a_missing_source(trees, capsys):
    refs, ests = trees
    accompaniment, _ = read_audio(ests / "song-b" / "accompaniment.wav")
    write_audio(ests / "song-b" / "accompaniment.wav", accompaniment[:, :-1000], RATE)
    assert main(["score", str(refs), str(ests), "--json", str(refs.parent / "s.json")]) == 0
    out = capsys.readouterr().out
    for note in json.loads((refs.parent / "s.json").read_text())["notes"]:
        assert note in out
    (ests / "song-a" / "vocals.wav").unlink()
    assert main(["score", str(refs), str(ests)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sepray: error: {ests / 'song-a'}: missing vocals.wav") and "\n" not in err


def test_exact_estimates_in_every_song_give_an_explicit_inf_median_and_a_note(tmp_path, capsys):
    """An estimate identical to its reference has SDR +inf; when every song's is, the median used to be a
    silent null (`-` in the table). Generated WAVs, no MUSDB needed."""
    refs, ests = tmp_path / "references", tmp_path / "estimates"
    rng = np.random.default_rng(0)
    for song in ("a", "b", "c"):
        for source in ("vocals", "accompaniment"):
            audio = torch.from_numpy(rng.uniform(-0.5, 0.5, (2, 3 * 8000)).astype(np.float32))
            write_audio(refs / song / f"{source}.wav", audio, 8000)
            exact = audio if source == "vocals" or song != "c" else 0.9 * audio  # c: accompaniment not exact
            write_audio(ests / song / f"{source}.wav", exact, 8000)
    assert main(["score", str(refs), str(ests), "--json", str(tmp_path / "scores.json")]) == 0
    result = json.loads((tmp_path / "scores.json").read_text())
    assert result["median"]["vocals"] == "inf" and result["median_utterance_sdr"]["vocals"] > 100
    assert result["median"]["accompaniment"] == "inf"  # two of three songs exact
    assert result["songs"]["c"]["accompaniment"]["sdr"] == pytest.approx(20.0, abs=1e-3)
    assert (
        "a: SDR +inf for vocals, accompaniment: the estimate equals the reference exactly"
        in result["notes"][0]
    )
    assert "c: SDR +inf for vocals:" in result["notes"][2]
    assert result["notes"][3] == (
        "median SDR +inf for vocals, accompaniment: at least half of the songs have an exact estimate "
        '("inf" in the JSON)'
    )
    table = capsys.readouterr().out
    median_row = next(line for line in table.splitlines() if line.startswith("median"))
    assert median_row.split()[3:] == ["inf", _utt(result, "vocals"), "inf", _utt(result, "accompaniment")]
    assert result["notes"][3] in table


def _utt(result, source):
    return f"{result['median_utterance_sdr'][source]:.2f}"
