"""`sepray score --metric bss_eval_v3` on folders of real WAVs: per-song SDR / SIR / SAR / NSDR, the mixture
it takes, GNSDR / GSIR / GSAR weighted by song length, the table, and bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sepray.audio import read_audio, write_audio
from sepray.bss_eval import bss_eval_sources
from sepray.cli import main
from sepray.scoring import format_table, score_folders
from sepray.scoring_v3 import METRIC, SUMMED

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bss_eval_speed.py"
_spec = importlib.util.spec_from_file_location("bss_eval_speed", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

RATE = 16000
SOURCES = ("vocals", "accompaniment")
# song -> (seed, seconds, the mixture file the reference folder holds: None = none, so the sum is used)
SONGS = {"amy_1_01": (4, 3.0, "mixture.wav"), "bobon_2_03": (1, 1.2, "mix.wav"), "tammy_5_07": (2, 2.0, None)}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> tuple[Path, Path]:
    """Three mono songs of 3 s, 1.2 s and 2 s (MIR-1K-like names), imperfect estimates; song one gives its
    mixture as (L+R)/2 in mixture.wav (NSDR does not depend on the mixture's scale), song two as mix.wav."""
    root = tmp_path_factory.mktemp("bss")
    refs, ests = root / "references", root / "estimates"
    for song, (seed, seconds, mixture) in SONGS.items():
        references, estimates, mix = bench.make_clip(seed, seconds)
        for i, source in enumerate(SOURCES):
            write_audio(refs / song / f"{source}.wav", torch.from_numpy(references[i : i + 1]).float(), RATE)
            write_audio(ests / song / f"{source}.wav", torch.from_numpy(estimates[i : i + 1]).float(), RATE)
        if mixture:
            scale = 0.5 if mixture == "mixture.wav" else 1.0
            write_audio(refs / song / mixture, torch.from_numpy(scale * mix[None]).float(), RATE)
    return refs, ests


def expected_scores(refs: Path, ests: Path, song: str):
    """BSS Eval v3 of the song's files as written (16-bit), the mixture = the references' sum."""
    references = np.stack([read_audio(refs / song / f"{s}.wav")[0][0].numpy() for s in SOURCES])
    estimates = np.stack([read_audio(ests / song / f"{s}.wav")[0][0].numpy() for s in SOURCES])
    return bss_eval_sources(references, estimates, mixture=references.sum(0)), references.shape[1] / RATE


def test_cli_scores_each_song_and_weights_the_means_by_length(trees, tmp_path, capsys):
    refs, ests = trees
    json_path = tmp_path / "scores.json"
    assert main(["score", str(refs), str(ests), "--metric", "bss_eval_v3", "--json", str(json_path)]) == 0
    result = json.loads(json_path.read_text())
    assert result["metric"] == METRIC
    assert result["mixture"] == {"amy_1_01": "mixture.wav", "bobon_2_03": "mix.wav", "tammy_5_07": SUMMED}
    assert list(result["songs"]["amy_1_01"]) == list(SOURCES)  # mix.wav / mixture.wav are not sources

    nsdr = {source: [] for source in SOURCES}
    seconds = []
    for song in SONGS:
        expected, length = expected_scores(refs, ests, song)
        assert result["seconds"][song] == pytest.approx(length)
        seconds.append(length)
        for i, source in enumerate(SOURCES):
            got = result["songs"][song][source]
            for key, want in (("sdr", expected.sdr), ("sir", expected.sir), ("sar", expected.sar)):
                assert got[key] == pytest.approx(want[i], abs=1e-9)
            # the mixture files are the same clip (rounded to 16 bits, half scale): NSDR within rounding
            assert got["nsdr"] == pytest.approx(expected.nsdr[i], abs=0.01)
            assert got["nsdr"] == pytest.approx(got["sdr"] - got["mix_sdr"], abs=1e-12)
            nsdr[source].append(got["nsdr"])
    for source in SOURCES:
        weighted = float(np.dot(nsdr[source], seconds) / np.sum(seconds))
        assert result["gnsdr"][source] == pytest.approx(weighted, abs=1e-12)
        assert abs(weighted - np.mean(nsdr[source])) > 0.01  # the case tells a weighted mean from a plain one
        sar = [result["songs"][song][source]["sar"] for song in SONGS]
        assert result["gsar"][source] == pytest.approx(
            float(np.dot(sar, seconds) / np.sum(seconds)), abs=1e-12
        )

    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{METRIC}, dB"
    summary = next(
        line for line in out.splitlines() if line.startswith("length-weighted mean (3 songs, 6.2 s)")
    )
    assert f"{result['gnsdr']['vocals']:.2f}" in summary.split()
    assert "NSDR's mixture" in out and "tammy_5_07" in out and "fixed order" in out


def test_default_metric_is_unchanged_by_the_mixture_files(trees):
    refs, ests = trees
    result = score_folders(refs, ests)
    assert "gnsdr" not in result and set(result["median"]) == {"vocals", "accompaniment"}
    assert any("not scored: mix (reference sources with no estimate" in note for note in result["notes"])


def test_a_silent_estimate_is_undefined_with_a_note(trees, tmp_path):
    refs, ests = trees
    silent = tmp_path / "estimates"
    for song in SONGS:
        for source in SOURCES:
            audio = read_audio(ests / song / f"{source}.wav")[0]
            write_audio(silent / song / f"{source}.wav", 0 * audio if song == "bobon_2_03" else audio, RATE)
    result = score_folders(refs, silent, metric="bss_eval_v3")
    assert result["songs"]["bobon_2_03"]["vocals"]["nsdr"] is None
    assert any(
        note.startswith("bobon_2_03: BSS Eval v3 undefined ('-') for vocals, accompaniment")
        for note in result["notes"]
    )
    others = [song for song in SONGS if song != "bobon_2_03"]
    nsdr = [result["songs"][song]["vocals"]["nsdr"] for song in others]
    weights = [result["seconds"][song] for song in others]
    assert result["gnsdr"]["vocals"] == pytest.approx(float(np.dot(nsdr, weights) / np.sum(weights)))
    assert " - " in format_table(result)


def test_a_mixture_file_that_does_not_match_is_a_one_line_error(trees, tmp_path, capsys):
    refs, ests = trees
    bad = tmp_path / "references"
    for song in SONGS:
        for source in SOURCES:
            write_audio(bad / song / f"{source}.wav", read_audio(refs / song / f"{source}.wav")[0], RATE)
    write_audio(bad / "amy_1_01" / "mixture.wav", torch.zeros(1, RATE), RATE)
    assert main(["score", str(bad), str(ests), "--metric", "bss_eval_v3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad / "amy_1_01" / "mixture.wav") in err and "16000 samples" in err


def test_unknown_metric_is_a_usage_error(trees, capsys):
    refs, ests = trees
    with pytest.raises(SystemExit) as exc:
        main(["score", str(refs), str(ests), "--metric", "sdr_v5"])
    assert exc.value.code == 2
    assert "bss_eval_v3" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected one of"):
        score_folders(refs, ests, metric="sdr_v5")
