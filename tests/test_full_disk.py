"""A full disk: `separate`, `score --json` and `report --out` each stop with one line naming the path and "no
space left", and leave nothing half-written (a real tmpfs of 256 KiB, real WAV files)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from sepray.audio import write_audio
from sepray.cli import main
from sepray.errors import NoSpaceError
from sepray.separate import separate_file
from sepray.sweep.report import copy_report
from tests.disk import fill, small_disk
from tests.test_streaming import unittest_model


def _one_line_no_space(message: str, path) -> None:
    assert "\n" not in message
    assert message.startswith(f"{path}: no space left on device ("), message
    assert message.endswith("); nothing was written"), message


def test_separate_onto_a_full_disk(tmp_path):
    """5 s of 16 kHz PCM: 2 x 160 kB of output on a 256 KiB disk. Used to end in `LibsndfileError: System
    error.` (a traceback)."""
    model, info = unittest_model()
    song = tmp_path / "song.wav"
    sf.write(str(song), np.random.default_rng(0).uniform(-0.3, 0.3, 5 * 16000), 16000, subtype="PCM_16")
    with small_disk(tmp_path / "disk") as disk:
        with pytest.raises(NoSpaceError) as exc:
            separate_file(model, info, song, disk, chunk_seconds=1.0, show_progress=False)
        _one_line_no_space(str(exc.value), disk / "song")
        assert os.listdir(disk) == []  # no temporary folder, no partial WAV


def test_score_json_onto_a_full_disk(tmp_path, capsys):
    """Used to end in an OSError traceback."""
    refs, ests = tmp_path / "refs", tmp_path / "ests"
    for folder, gain in ((refs, 1.0), (ests, 0.5)):
        for source in ("vocals", "accompaniment"):
            audio = torch.linspace(-0.5, 0.5, 8000).repeat(2, 1) * gain  # (2, T)
            write_audio(folder / "song" / f"{source}.wav", audio, 8000)
    with small_disk(tmp_path / "disk") as disk:
        fill(disk, leave=0)
        json_path = disk / "scores.json"
        assert main(["score", str(refs), str(ests), "--json", str(json_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("sepray: error: ")
        _one_line_no_space(err.removeprefix("sepray: error: "), json_path)
        assert sorted(os.listdir(disk)) == ["filler"]  # no temporary file


def test_report_out_onto_a_full_disk(tmp_path):
    """Used to end in a `shutil.Error` traceback with `inline.html` cut off in the user's folder."""
    built = tmp_path / "built"
    (built / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    (built / "index.html").write_text("<html>report</html>")
    (built / "inline.html").write_bytes(rng.bytes(200_000))  # about what embedded audio makes it
    (built / "images" / "curves.png").write_bytes(rng.bytes(100_000))
    with small_disk(tmp_path / "disk") as disk:
        with pytest.raises(NoSpaceError) as exc:
            copy_report(built, disk / "report", "0" * 32)
        _one_line_no_space(str(exc.value), disk / "report")
        assert os.listdir(disk) == []
