"""The README's single-model loop, really run: data synth -> train -> evaluate -> separate -> score,
with real WAV files, a real sqlite MLflow store and the `sepray` command in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepray import tracking

TINY = [
    "--set",
    "model.levels=3",
    "--set",
    "model.channels=4",
    "--set",
    "model.down_kernel=5",
    "--set",
    "model.up_kernel=3",
    "--set",
    "train.epochs=2",
    "--set",
    "train.steps_per_epoch=3",
    "--set",
    "train.batch_size=2",
    "--set",
    "train.segment_seconds=0.25",
    "--set",
    "train.valid_crops=2",
    "--set",
    "train.valid_seconds=0.5",
    "--set",
    "data.sample_rate=8000",
]


def sepray(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "sepray", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"sepray {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Synthesize a corpus, train the small Wave-U-Net preset (shrunk) on it; return (workdir, run_id, corpus)."""
    work = tmp_path_factory.mktemp("flow")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    corpus = work / "corpus"
    sepray("data", "synth", str(corpus), "--songs", "4", "--seconds", "5", "--seed", "3", cwd=work)
    proc = sepray("train", "waveunet-small", "--set", f"data.path={corpus}", *TINY, cwd=work)
    run_id = proc.stdout.strip().splitlines()[-1]
    yield work, run_id, corpus
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_synth_writes_ccmixter_layout(trained):
    _, _, corpus = trained
    songs = sorted(p for p in corpus.iterdir() if p.is_dir())
    assert len(songs) == 4
    for song in songs:
        assert {"mix.wav", "source-01.wav", "source-02.wav", "meta.json"} <= {p.name for p in song.iterdir()}


def test_train_logs_params_metrics_and_package(trained):
    work, run_id, _ = trained
    run = tracking.get_run(run_id, f"sqlite:///{work / 'mlflow.db'}")
    assert run.info.status == "FINISHED"
    assert run.data.params["model.levels"] == "3"
    assert "valid_sdr_vocals" in run.data.metrics and "train_loss" in run.data.metrics
    history = tracking.Run(run_id, f"sqlite:///{work / 'mlflow.db'}").metric_history("valid_sdr")
    assert [s for s, _ in history] == [1, 2]
    pkg = tracking.download_package(run_id, work / "dl", f"sqlite:///{work / 'mlflow.db'}")
    meta = json.loads((pkg / "config.json").read_text())
    assert meta["model"] == "waveunet" and meta["sample_rate"] == 8000
    assert (work / "runs" / run_id / "checkpoint.pt").is_file()


def test_evaluate_logs_test_sdr(trained):
    work, run_id, _ = trained
    proc = sepray("evaluate", "--run-id", run_id, cwd=work)
    assert "median over songs" in proc.stdout and "museval" in proc.stdout
    run = tracking.get_run(run_id, f"sqlite:///{work / 'mlflow.db'}")
    for key in (
        "test_sdr_vocals",
        "test_sdr_accompaniment",
        "test_sdr_mix_vocals",
        "test_sdr_halfmix_vocals",
    ):
        assert key in run.data.metrics


def test_evaluate_bss_eval_v3_logs_gnsdr_weighted_by_song_length(trained, tmp_path):
    work, run_id, _ = trained
    uri = f"sqlite:///{work / 'mlflow.db'}"
    proc = sepray("evaluate", "--run-id", run_id, "--metric", "bss_eval_v3", cwd=work)
    assert "GNSDR" in proc.stdout and "GSIR" in proc.stdout and "bss_eval_v3" in proc.stdout
    metrics = tracking.get_run(run_id, uri).data.metrics
    path = tracking.download_artifacts(run_id, "evaluation/test_sdr.json", tmp_path, uri)
    bss = json.loads(path.read_text())["bss_eval_v3"]
    assert bss["songs"] and set(bss["seconds"]) == set(bss["songs"])
    for source in ("vocals", "accompaniment"):
        nsdr = [bss["songs"][song][source]["nsdr"] for song in bss["seconds"]]
        weights = [bss["seconds"][song] for song in bss["seconds"]]
        assert bss["gnsdr"][source] == pytest.approx(float(np.dot(nsdr, weights) / np.sum(weights)))
        for name in ("gnsdr", "gsir", "gsar", "gsdr"):
            assert metrics[f"test_{name}_{source}"] == pytest.approx(bss[name][source])
    assert metrics["test_gnsdr"] == pytest.approx(
        (bss["gnsdr"]["vocals"] + bss["gnsdr"]["accompaniment"]) / 2
    )


def test_evaluate_on_the_real_musdb_excerpt(trained, musdb_sample):
    work, run_id, _ = trained
    proc = sepray("evaluate", "--run-id", run_id, "--data", str(musdb_sample), "--split", "train", cwd=work)
    assert "Music Delta - 80s Rock" in proc.stdout
    run = tracking.get_run(run_id, f"sqlite:///{work / 'mlflow.db'}")
    assert "train_sdr_vocals" in run.data.metrics
    proc = sepray("evaluate", "--run-id", run_id, "--data", str(musdb_sample), cwd=work, check=False)
    assert proc.returncode == 2 and "the test split has no songs" in proc.stderr


def test_separate_real_musdb_excerpt_then_score(trained, musdb_track, tmp_path):
    work, run_id, _ = trained
    mixture = musdb_track / "mixture.wav"
    out = tmp_path / "sep"
    proc = sepray("separate", "--run-id", run_id, str(mixture), "-o", str(out), cwd=work)
    song_dir = out / "mixture"
    assert proc.stdout.strip().endswith(str(song_dir))
    info_in = sf.info(str(mixture))
    for name in ("vocals", "accompaniment"):
        info = sf.info(str(song_dir / f"{name}.wav"))
        assert (info.samplerate, info.channels, info.frames) == (
            info_in.samplerate,
            info_in.channels,
            info_in.frames,
        )
    # score the estimates against the excerpt's stems
    ref = tmp_path / "ref" / "mixture"
    ref.mkdir(parents=True)
    (ref / "vocals.wav").symlink_to(musdb_track / "vocals.wav")
    proc = sepray("score", str(tmp_path / "ref"), str(out), "--json", str(tmp_path / "s.json"), cwd=work)
    result = json.loads((tmp_path / "s.json").read_text())
    assert set(result["songs"]["mixture"]) == {"vocals"}
    assert "frames" in result["songs"]["mixture"]["vocals"]


def test_resume_continues_an_interrupted_run(trained, tmp_path):
    from sepray.config import load_config
    from sepray.train_run import train_run

    work, _, corpus = trained
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("waveunet-small", [f"data.path={corpus}", *TINY[1::2]])

    def interrupt_after_first_epoch(msg: str) -> None:
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, checkpoint_root=tmp_path / "runs", uri=uri, log=interrupt_after_first_epoch)
    (run,) = tracking.find_runs("sepray", uri=uri)
    assert run.info.status == "KILLED"
    result = train_run(
        None, checkpoint_root=tmp_path / "runs", resume_run_id=run.info.run_id, uri=uri, log=lambda m: None
    )
    assert result.run_id == run.info.run_id
    runs = tracking.find_runs("sepray", uri=uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [s for s, _ in tracking.Run(result.run_id, uri).metric_history("valid_sdr")]
    assert steps == [1, 2]


@pytest.mark.parametrize(
    "make_input, needle",
    [
        (lambda d: d / "missing.wav", "missing.wav: no such file"),
        (lambda d: _write(d / "garbage.wav", b"RIFF not really a wav"), "garbage.wav: cannot read audio"),
        (lambda d: _write(d / "notes.txt", b"hello"), "notes.txt: cannot read audio"),
        (lambda d: _empty_wav(d / "empty.wav"), "empty.wav: empty audio file"),
        (lambda d: _mkdir(d / "album.wav"), "album.wav: is a directory, expected an audio file"),
    ],
)
def test_separate_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, make_input, needle):
    work, run_id, _ = trained
    good = tmp_path / "good.wav"
    sf.write(str(good), [0.0] * 800, 8000)
    bad = make_input(tmp_path)
    out = tmp_path / "out"
    proc = sepray("separate", "--run-id", run_id, str(good), str(bad), "-o", str(out), cwd=work, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_separate_unknown_run_and_run_without_package(trained, tmp_path):
    work, _, _ = trained
    song = tmp_path / "song.wav"
    sf.write(str(song), [0.0] * 800, 8000)
    proc = sepray(
        "separate",
        "--run-id",
        "0123456789abcdef0123456789abcdef",
        str(song),
        "-o",
        str(tmp_path / "o"),
        cwd=work,
        check=False,
    )
    assert proc.returncode == 2 and "run 0123456789abcdef0123456789abcdef: no such MLflow run" in proc.stderr
    bare = tracking.start_run("sepray", run_name="no-package", uri=f"sqlite:///{work / 'mlflow.db'}")
    bare.end()
    proc = sepray(
        "separate", "--run-id", bare.run_id, str(song), "-o", str(tmp_path / "o"), cwd=work, check=False
    )
    assert proc.returncode == 2 and "has no model package" in proc.stderr
    assert not (tmp_path / "o").exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _empty_wav(path: Path) -> Path:
    sf.write(str(path), [], 8000, format="WAV")
    return path


def test_separate_rejects_a_package_of_an_unknown_format_version(trained, tmp_path):
    work, run_id, _ = trained
    uri = f"sqlite:///{work / 'mlflow.db'}"
    pkg = tracking.download_package(run_id, tmp_path / "dl", uri)
    meta = json.loads((pkg / "config.json").read_text())
    meta["format_version"] = 999
    (pkg / "config.json").write_text(json.dumps(meta))
    future = tracking.start_run("sepray", run_name="future-package", uri=uri)
    future.log_artifacts(pkg, "model")
    future.end()
    song = tmp_path / "song.wav"
    sf.write(str(song), [0.0] * 800, 8000)
    out = tmp_path / "o"
    proc = sepray("separate", "--run-id", future.run_id, str(song), "-o", str(out), cwd=work, check=False)
    assert proc.returncode == 2
    assert "model/config.json: package format version 999 is not supported" in proc.stderr
    assert f"run {future.run_id}: artifact model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_separate_keeps_the_input_and_user_files_and_replaces_only_its_own_output(trained, tmp_path):
    """`mkdir -p out/x; cp song.wav out/x/good; sepray separate --run-id R out/x/good -o out/x` used to delete
    the input; a previous separation is replaced (said on stderr), anything else at OUT/<song> is kept."""
    work, run_id, _ = trained
    rng = np.random.default_rng(0)
    song = tmp_path / "song.wav"
    sf.write(str(song), (rng.standard_normal(8000) * 0.1).astype(np.float32), 8000)
    (tmp_path / "out" / "x").mkdir(parents=True)
    good = tmp_path / "out" / "x" / "good"
    good.write_bytes(song.read_bytes())
    proc = sepray(
        "separate", "-q", "--run-id", run_id, str(good), "-o", str(good.parent), cwd=work, check=False
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"{good}: is the input file itself" in proc.stderr
    assert good.read_bytes() == song.read_bytes() and sorted(good.parent.iterdir()) == [good]

    out = tmp_path / "sep"
    sepray("separate", "-q", "--run-id", run_id, str(song), "-o", str(out), cwd=work)
    proc = sepray("separate", "-q", "--run-id", run_id, str(song), "-o", str(out), cwd=work)
    assert proc.stderr.strip() == f"replacing the previous separation in {out / 'song'}"
    mine = out / "song" / "my-notes.txt"
    mine.write_text("keep me")
    proc = sepray("separate", "-q", "--run-id", run_id, str(song), "-o", str(out), cwd=work, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "holds files sepray separate did not write (my-notes.txt)" in proc.stderr
    assert mine.read_text() == "keep me" and (out / "song" / "vocals.wav").is_file()


def test_separate_refuses_nan_and_inf_samples(trained, tmp_path):
    """A float WAV with a few NaN/Inf samples used to give rc 0 and full-scale clicks around them."""
    work, run_id, _ = trained
    audio = (np.random.default_rng(1).standard_normal((3 * 8000, 2)) * 0.1).astype(np.float32)
    audio[12000, 0], audio[12001, 1], audio[20000, 0] = np.nan, np.inf, -np.inf
    song = tmp_path / "clicks.wav"
    sf.write(str(song), audio, 8000, subtype="FLOAT")
    out = tmp_path / "out"
    proc = sepray("separate", "-q", "--run-id", run_id, str(song), "-o", str(out), cwd=work, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"sepray: error: {song}: NaN or infinite sample at 1.500 s (frame 12000); the audio must be finite"
    )
    assert not out.exists()


def test_train_without_a_config_trains_the_default_preset(trained):
    """`sepray train` alone trains spec-unet-small (here shrunk through --set, on the test corpus)."""
    from sepray.cli import DEFAULT_PRESET

    work, _, corpus = trained
    tiny = ["model.levels=2", "model.channels=2", "model.max_channels=4", "train.epochs=1"]
    tiny += [
        "train.steps_per_epoch=2",
        "train.batch_size=2",
        "train.valid_crops=2",
        "train.valid_seconds=0.5",
    ]
    args = [item for key in [f"data.path={corpus}", *tiny] for item in ("--set", key)]
    proc = sepray("train", *args, cwd=work)
    assert f"training the default preset {DEFAULT_PRESET}" in proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    config = tracking.load_run_config(run_id)
    assert config["model"]["name"] == "spec_unet" and config["model"]["n_fft"] == 512


def test_sigterm_mid_song_removes_everything_and_a_killed_runs_folder_is_removed(trained, tmp_path):
    """SIGTERM of `sepray separate` used to leave OUT/.tmp-<song>-*/ with partial WAVs, and no later run
    cleaned them. Now SIGTERM ends it as Ctrl-C does (exit 143, nothing left); a folder a run killed with
    SIGKILL left (made here as tests/test_output_folders.py sees a real one left) is removed by the next run
    into the same OUT, which says so."""
    from sepray.output_folders import PARTIAL_FORMAT, PARTIAL_MARK
    from tests.test_output_folders import wait_for_partial

    work, run_id, _ = trained
    song = tmp_path / "long.wav"
    sf.write(str(song), np.random.default_rng(2).uniform(-0.2, 0.2, 300 * 8000).astype(np.float32), 8000)
    out = tmp_path / "out"
    stale = out / ".tmp-long-x1y2z3"
    stale.mkdir(parents=True)
    (stale / ".tmp-a1b2.wav").write_bytes(b"RIFF" + bytes(1000))
    mark = {"format": PARTIAL_FORMAT, "pid": 4321, "host": "here", "started": "2025-01-01 00:00:00"}
    (stale / PARTIAL_MARK).write_text(json.dumps(mark))
    args = ["separate", "-q", "--run-id", run_id, str(song), "-o", str(out), "--chunk-seconds", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sepray", *args],
        cwd=work,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        partial = wait_for_partial(out, "long", proc, other_than=stale)
        assert not stale.exists()  # removed as the run started
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr.read().strip().splitlines() == [
        f"removed {stale}: a partial separation left by process 4321 on here (started 2025-01-01 00:00:00), "
        "which did not finish",
        "sepray: interrupted",
    ]
    assert not partial.exists() and os.listdir(out) == []
