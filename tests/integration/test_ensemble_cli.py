"""`sepray ensemble` by hand and `sepray separate` / `sepray evaluate` with its run: two finished runs of different
families at different rates (a Wave-U-Net at 8 kHz, a spectrogram U-Net at 16 kHz; untrained, real packages in a
real sqlite store), a real 44.1 kHz stereo WAV, the real command line; and each bad input as one line, exit 2."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sepray import SOURCES, names, tracking
from sepray.cli import main
from sepray.ensemble.package import load_members
from sepray.ensemble.weights import combine
from sepray.package import load_package
from sepray.separate import separate_file
from tests.ensemble.conftest import member_configs_raw, save_member


def _log_run(uri: str, raw: dict, seed: int, name: str, package: bool = True) -> str:
    run = tracking.start_run("duo", name, {names.KIND: "train"}, uri=uri)
    if package:
        with tempfile.TemporaryDirectory() as tmp:
            run.log_artifacts(save_member(raw, Path(tmp) / "model", seed), "model")
    run.log_dict(raw, "run_config.json")
    run.end("FINISHED")
    return run.run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """uri, work folder, and run ids: the two members, a run on other data, a run without a package."""
    work = tmp_path_factory.mktemp("duo")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", uri)  # for the subprocesses and `main` alike
    first, second = member_configs_raw()
    other = copy.deepcopy(first)
    other["data"]["synth_seed"] = 7  # other songs: no common validation songs
    ids = {
        "unet8k": _log_run(uri, first, 0, "waveunet 8k"),
        "spec16k": _log_run(uri, second, 1, "spec_unet 16k"),
        "other": _log_run(uri, other, 2, "other data"),
        "bare": _log_run(uri, first, 3, "no package", package=False),
    }
    yield uri, work, ids
    patch.undo()


def sepray(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sepray", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def duo(runs):
    """`sepray ensemble A B --name duo`: its run id (stdout's last line)."""
    uri, work, ids = runs
    proc = sepray("ensemble", ids["unet8k"], ids["spec16k"], "--name", "duo", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fitting the ensemble's weights on 1 validation songs" in proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_sepray_ensemble_logs_a_run_with_a_fitted_package(runs, duo):
    uri, work, ids = runs
    run = tracking.get_run(duo, uri)
    assert run.info.run_name == "duo" and run.info.status == "FINISHED"
    assert (
        run.data.tags[names.KIND] == "ensemble"
        and run.data.tags[names.MEMBERS] == f"{ids['unet8k']},{ids['spec16k']}"
    )
    assert run.info.experiment_id == tracking.get_run(ids["unet8k"], uri).info.experiment_id
    assert (
        run.data.params["weights_method"] == "fit" and run.data.params["member_sample_rates"] == "8000,16000"
    )
    assert names.fit_metric("vocals") in run.data.metrics and names.fit_metric() in run.data.metrics
    package = tracking.download_package(duo, work / "pkg", uri)
    config, members = load_members(package)
    assert config.sample_rate == 16000 and [m.model for m in config.members] == ["waveunet", "spec_unet"]
    assert config.fit["songs"] == 1 and config.fit["sources"] == list(SOURCES)
    assert abs(sum(config.weights) - 1) < 1e-6 and min(config.weights) >= 0


def test_separate_with_an_ensemble_of_two_families_at_two_rates(runs, duo):
    """A 44.1 kHz stereo song: each member runs at its own rate (8 / 16 kHz), the files come back at 44.1 kHz,
    sum to the mixture and are the members' own separations combined with the ensemble's weights."""
    uri, work, ids = runs
    rate, rng = 44100, np.random.default_rng(3)
    t = np.arange(int(1.5 * rate)) / rate
    song = 0.15 * rng.standard_normal((len(t), 2)) + 0.3 * np.sin(2 * np.pi * 330 * t)[:, None]
    sf.write(work / "song.wav", song / np.abs(song).max() * 0.9, rate, subtype="PCM_16")
    proc = sepray("separate", "--run-id", duo, str(work / "song.wav"), "-o", str(work / "out"), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mix, _ = sf.read(work / "song.wav", dtype="float32")
    written = {s: sf.read(work / "out" / "song" / f"{s}.wav", dtype="float32") for s in SOURCES}
    assert all(r == rate and w.shape == mix.shape for w, r in written.values())
    assert np.abs(written["vocals"][0] + written["accompaniment"][0] - mix).max() < 2e-4  # 16-bit rounding
    config, _ = load_members(tracking.download_package(duo, work / "pkg2", uri))
    alone = []
    for i, run_id in enumerate((ids["unet8k"], ids["spec16k"])):
        model, info = load_package(tracking.download_package(run_id, work / f"m{i}", uri))
        out = separate_file(model, info, work / "song.wav", work / f"alone{i}", show_progress=False)
        alone.append({s: torch.from_numpy(sf.read(out / f"{s}.wav", dtype="float32")[0].T) for s in SOURCES})
    expected = combine(alone, config.weights, torch.from_numpy(mix.T))
    for s in SOURCES:
        assert np.abs(written[s][0].T - expected[s].numpy()).max() < 2e-4, s


def test_evaluate_an_ensemble(runs, duo, capsys):
    uri, _, _ = runs
    assert main(["evaluate", "--run-id", duo]) == 0
    assert "median over songs" in capsys.readouterr().out
    metrics = tracking.get_run(duo, uri).data.metrics
    assert {"test_sdr_vocals", "test_sdr_accompaniment", "test_x_realtime"} <= set(metrics)


def _error(capsys, argv: list[str], *needles: str) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sepray: error: "), err
    for needle in needles:
        assert needle in err, err


def test_bad_members_are_one_line_errors(runs, duo, capsys):
    uri, _, ids = runs
    a, b = ids["unet8k"], ids["spec16k"]
    before = len(tracking.find_runs("duo", uri=uri))
    _error(capsys, ["ensemble", a], "an ensemble needs at least two runs, got 1")
    _error(capsys, ["ensemble", a, b, a], f"run {a} is given twice")
    _error(capsys, ["ensemble", a, "not-a-run"], "'not-a-run': not a run id")
    _error(capsys, ["ensemble", a, "0123456789abcdef0123456789abcdef"], "no such MLflow run")
    _error(capsys, ["ensemble", a, ids["bare"]], f"run {ids['bare']}: has no model package")
    _error(capsys, ["ensemble", a, duo], f"run {duo} is an ensemble; list its members' runs instead")
    _error(
        capsys, ["ensemble", a, ids["other"]], "different data (data.synth_seed: 0 vs 7)", "--weights equal"
    )
    _error(capsys, ["ensemble", a, b, "--weights", "best"], "argument --weights: invalid choice")
    assert len(tracking.find_runs("duo", uri=uri)) == before  # no run was logged for any of them


def test_separate_with_an_ensemble_checks_its_inputs_first(runs, duo, capsys):
    """The same one-line errors as with a single model, before any member is loaded; nothing written."""
    _, work, _ = runs
    blocker = work / "blocker"
    blocker.write_text("a file, not a folder")
    sf.write(work / "short.wav", np.zeros(800, dtype=np.float32), 8000)
    _error(capsys, ["separate", "-q", "--run-id", duo, str(work / "missing.wav")], "missing.wav")
    _error(
        capsys,
        ["separate", "-q", "--run-id", duo, str(work / "short.wav"), "-o", str(blocker)],
        "not a folder",
    )
    _error(
        capsys, ["separate", "-q", "--run-id", duo, str(work / "short.wav"), "--chunk-seconds", "0"], "> 0"
    )
    assert blocker.read_text() == "a file, not a folder"


def test_equal_weights_need_no_common_validation_songs(runs, capsys):
    uri, _, ids = runs
    assert main(["ensemble", ids["unet8k"], ids["other"], "--weights", "equal"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    run = tracking.get_run(run_id, uri)
    assert run.data.params["weights"] == "0.5,0.5" and run.data.params["weights_method"] == "equal"
    assert run.info.run_name == "ensemble of waveunet 8k + other data"
