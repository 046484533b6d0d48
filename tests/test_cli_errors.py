"""The ``sepray`` command refuses bad arguments and bad paths with one line (exit 2) and touches nothing:
numeric options, malformed run ids, paths that are files where folders are wanted (and the reverse).
Real CLI invocations (``sepray.cli.main``) on real files; none of these needs a trained run."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sepray.cli import main
from sepray.data.synth import write_corpus

UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"  # well-formed, but no such run


def _song(path):
    sf.write(str(path), np.zeros(800, dtype=np.float32), 8000)
    return path


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sepray: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--chunk-seconds", "-5"], "argument --chunk-seconds: must be a finite number > 0, got '-5'"),
        (["--chunk-seconds", "0"], "argument --chunk-seconds: must be a finite number > 0"),
        (["--chunk-seconds", "nan"], "argument --chunk-seconds: must be a finite number > 0, got 'nan'"),
        (["--chunk-seconds", "inf"], "argument --chunk-seconds: must be a finite number > 0"),
        (["--chunk-seconds", "ten"], "argument --chunk-seconds: expected a number of seconds, got 'ten'"),
    ],
)
def test_separate_chunk_seconds_is_validated(tmp_path, capsys, args, needle):
    song = _song(tmp_path / "song.wav")
    with pytest.raises(SystemExit) as exc:
        main(["separate", "--run-id", UNKNOWN_RUN, str(song), "-o", str(tmp_path / "out"), *args])
    assert exc.value.code == 2
    _one_line_error(capsys, needle, "(see sepray separate --help)")  # no usage block: one line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        ([], "the following arguments are required: command (see sepray --help)"),
        (["separate", "song.wav"], "the following arguments are required: --run-id"),
        (["bogus"], "argument command: invalid choice: 'bogus'"),
        (["evaluate", "--run-id", UNKNOWN_RUN, "--split", "x"], "argument --split: invalid choice: 'x'"),
        (["sweep", "s.yaml", "--num-cpus", "two"], "argument --num-cpus: invalid int value: 'two'"),
        (["separate", "--run-id", UNKNOWN_RUN, "a.wav", "--max-memory", "lots"], "argument --max-memory"),
    ],
)
def test_every_usage_error_is_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    _one_line_error(capsys, needle)


MALFORMED_YAML = [
    ("data:\n  sample_rate: 8000\n channels: 1\n", "line 3, column 2: invalid YAML: expected <block end>"),
    ("name: x\nsearch:\n  params: [a\n b: 1\n", "line 4, column 3: invalid YAML: expected ',' or ']'"),
    ('model: {name: "waveunet\n', "line 2, column 1: invalid YAML: found unexpected end of stream"),
    (
        "train:\n\tlr: 1\n",
        "line 2, column 1: invalid YAML: found character '\\t' that cannot start any token",
    ),
]


@pytest.mark.parametrize("text, needle", MALFORMED_YAML)
def test_malformed_yaml_names_file_line_and_column(tmp_path, capsys, monkeypatch, text, needle):
    """Configs (`sepray train`, through the CLI), sweep specs (`load_spec`, which `sepray sweep` calls first;
    its SpecError is printed the same way) and split files: `FILE: line L, column C: what is wrong`, one line."""
    from sepray.data.layouts import DatasetError
    from sepray.data.splits import read_split_file
    from sepray.sweep.sections import SpecError
    from sepray.sweep.spec import load_spec

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", str(path)]) == 2
    _one_line_error(capsys, f"{path}: {needle}")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert str(exc.value).startswith(f"{path}: {needle}") and "\n" not in str(exc.value)
    with pytest.raises(DatasetError) as exc:  # a data.split file
        read_split_file(path)
    assert str(exc.value).startswith(f"{path}: {needle}") and "\n" not in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no store, no runs


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--songs", "0"], "argument --songs: must be >= 1, got '0'"),
        (["--songs", "-3"], "argument --songs: must be >= 1"),
        (["--songs", "1.5"], "argument --songs: expected an integer, got '1.5'"),
        (["--seconds", "0"], "argument --seconds: must be a finite number > 0"),
        (["--seconds", "-1"], "argument --seconds: must be a finite number > 0"),
        (["--seconds", "nan"], "argument --seconds: must be a finite number > 0"),
        (["--seconds", "inf"], "argument --seconds: must be a finite number > 0"),
        (["--sample-rate", "0"], "argument --sample-rate: must be >= 8000"),
        (["--sample-rate", "-16000"], "argument --sample-rate: must be >= 8000"),
        (["--seed", "-1"], "argument --seed: must be >= 0"),
    ],
)
def test_data_synth_numbers_are_validated(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", str(tmp_path / "corpus"), *args])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "corpus").exists()


def test_write_corpus_of_zero_songs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="songs must be >= 1, got 0"):
        write_corpus(tmp_path / "corpus", songs=0, seconds=1.0, seed=0)
    with pytest.raises(ValueError, match="seconds must be a finite number > 0"):
        write_corpus(tmp_path / "corpus", songs=1, seconds=float("nan"), seed=0)
    assert not (tmp_path / "corpus").exists()


def test_data_synth_into_an_existing_file(tmp_path, capsys):
    target = tmp_path / "corpus"
    target.write_text("my notes")
    assert main(["data", "synth", str(target), "--songs", "1", "--seconds", "0.5"]) == 2
    _one_line_error(capsys, f"{target}: exists and is not a folder")
    assert target.read_text() == "my notes"
    below_a_file = target / "sub"
    assert main(["data", "synth", str(below_a_file), "--songs", "1", "--seconds", "0.5"]) == 2
    _one_line_error(capsys, str(target))  # the OSError names the path
    assert target.read_text() == "my notes"


@pytest.mark.parametrize("run_id", ["zz!", "../../etc", "0123456789abcdef", UNKNOWN_RUN.upper(), ""])
@pytest.mark.parametrize("command", ["separate", "evaluate", "train"])
def test_a_malformed_run_id_is_not_a_run_id(tmp_path, capsys, monkeypatch, command, run_id):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = {
        "separate": ["separate", "--run-id", run_id, str(tmp_path / "song.wav")],
        "evaluate": ["evaluate", "--run-id", run_id],
        "train": ["train", "--resume", run_id],
    }[command]
    if command == "separate":
        _song(tmp_path / "song.wav")
    assert main(args) == 2
    err = _one_line_error(capsys, f"{run_id!r}: not a run id: expected 32 hex characters")
    assert "model package" not in err and "checkpoint" not in err
    expected = ["song.wav"] if command == "separate" else []
    assert sorted(p.name for p in tmp_path.iterdir()) == expected  # no mlflow.db, runs/ or output folder


def test_separate_output_folder_that_is_a_file(tmp_path, capsys):
    song = _song(tmp_path / "song.wav")
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert main(["separate", "-q", "--run-id", UNKNOWN_RUN, str(song), "-o", str(out)]) == 2
    _one_line_error(capsys, f"{out}: exists and is not a folder")
    assert main(["separate", "-q", "--run-id", UNKNOWN_RUN, str(song), "-o", str(out / "x")]) == 2
    _one_line_error(capsys, f"{out}: is not a folder, cannot create the output folder")
    assert out.read_text() == "not a folder"


def test_separate_a_directory_as_input(tmp_path, capsys):
    folder = tmp_path / "album.wav"
    folder.mkdir()
    assert main(["separate", "-q", "--run-id", UNKNOWN_RUN, str(folder), "-o", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, f"{folder}: is a directory, expected an audio file")
    assert not (tmp_path / "o").exists()
