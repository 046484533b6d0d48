"""User errors the bad-input probe met as tracebacks: each is one line, exit 2, and creates no run.

Real ``sepray`` commands (``sepray.cli.main``) on real files: non-finite and impossible config values, files that
are not UTF-8, a malformed ``--address``, devices sepray does not run on, a model package with a broken
``config.json`` logged to a real sqlite store.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from sepray import tracking
from sepray.cli import main
from sepray.device import resolve_device
from sepray.errors import UsageError
from sepray.models import build_model
from sepray.package import save_package
from tests.conftest import REPO
from tests.stores import fresh_store
from tests.test_cli_errors import _one_line_error

SPEC = REPO / "sweeps" / "quickstart.yaml"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


@pytest.mark.parametrize(
    "args, needles",
    [
        (["spec-unet-small", "--set", "train.lr=.nan"], ["train.lr: expected a finite number, got nan"]),
        (["spec-unet-small", "--set", "train.lr=.inf"], ["train.lr: expected a finite number, got inf"]),
        (
            ["spec-unet-small", "--set", "model.levels=99"],
            ["levels must be <= 8 for n_fft 512", "got 99"],
        ),  # spec_unet
        (
            ["unittest", "--set", "model.levels=99"],
            ["model waveunet: one training crop needs", "fewer levels"],
        ),
        (
            ["spec-unet-small", "--set", "train.device=mps"],
            ["device must be auto, cpu, cuda or cuda:N, got 'mps'"],
        ),
        (
            ["spec-unet-small", "--set", "train.device=meta"],
            ["device must be auto, cpu, cuda or cuda:N, got 'meta'"],
        ),
    ],
    ids=["lr-nan", "lr-inf", "spec-unet-levels-99", "waveunet-levels-99", "device-mps", "device-meta"],
)
def test_impossible_training_configs_are_refused_before_a_run_exists(workdir, capsys, args, needles):
    assert main(["train", *args]) == 2
    _one_line_error(capsys, *needles)
    assert not (workdir / "mlflow.db").exists() and not (workdir / "runs").exists()  # no run, FAILED or not


@pytest.mark.parametrize("device", ["mps", "meta", "xpu", "cuda:x"])
def test_devices_sepray_does_not_run_on(workdir, capsys, device):
    with pytest.raises(UsageError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device(device)
    song = workdir / "song.wav"
    sf.write(str(song), np.zeros(800, dtype=np.float32), 8000)
    args = ["separate", "-q", "--run-id", "0" * 32, str(song), "-o", str(workdir / "out"), "--device", device]
    assert main(args) == 2
    _one_line_error(capsys, f"device {device!r}: expected auto, cpu, cuda or cuda:N")


def test_files_that_are_not_utf8(workdir, capsys):
    latin1 = "name: café\n".encode("latin-1")
    (workdir / "spec.yaml").write_bytes(latin1)
    (workdir / "config.yaml").write_bytes(b"# r\xe9glages\ndata: {}\n")
    assert main(["sweep", str(workdir / "spec.yaml")]) == 2
    _one_line_error(capsys, f"{workdir / 'spec.yaml'}: not UTF-8 text (byte 0xe9 on line 1)")
    assert main(["train", str(workdir / "config.yaml")]) == 2
    _one_line_error(capsys, f"{workdir / 'config.yaml'}: not UTF-8 text (byte 0xe9 on line 1)")


def test_smoke_test_of_a_spec_with_a_word_for_a_number(workdir, capsys):
    spec = workdir / "six.yaml"
    spec.write_text(
        SPEC.read_text().replace("num_samples: 6\n  max_concurrent", "num_samples: six\n  max_concurrent")
    )
    assert "num_samples: six" in spec.read_text()
    assert main(["sweep", str(spec), "--smoke-test"]) == 2
    _one_line_error(capsys, f"{spec}: search.num_samples: expected an integer, got 'six'")


@pytest.mark.parametrize("address", ["localhost:notaport", "localhost:99999", "localhost:"])
def test_an_address_without_a_port_number(workdir, capsys, address):
    assert main(["sweep", str(SPEC), "--smoke-test", "--address", address]) == 2
    _one_line_error(capsys, f"--address {address}: expected HOST:PORT with a port number")


@pytest.fixture(scope="module")
def package_store(tmp_path_factory):
    """A tracking store (made once) and a valid package of a tiny model to break in each test."""
    work = tmp_path_factory.mktemp("packages")
    uri = fresh_store(work)
    model = build_model("stft_mask", {"n_fft": 64, "hop": 16, "freq_filters": 4, "time_filters": 4})
    return uri, save_package(model, work / "model", "stft_mask", 8000)


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("sample_rate", 0, "sample_rate must be a whole number >= 1, got 0"),
        ("sample_rate", -8000, "sample_rate must be a whole number >= 1, got -8000"),
        ("audio_channels", 0, "audio_channels must be a whole number >= 1, got 0"),
        ("sources", [], "sources must be a non-empty list"),
    ],
)
def test_a_model_package_with_an_impossible_config(
    package_store, tmp_path, monkeypatch, capsys, field, value, needle
):
    """``sample_rate: 0`` was a ZeroDivisionError traceback."""
    uri, valid = package_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    package = tmp_path / "model"
    shutil.copytree(valid, package)
    meta = json.loads((package / "config.json").read_text())
    meta[field] = value
    (package / "config.json").write_text(json.dumps(meta))
    run = tracking.start_run("sepray", run_name="broken package", uri=uri)
    run.log_artifacts(package, "model")
    song = tmp_path / "song.wav"
    sf.write(str(song), np.zeros(8000, dtype=np.float32), 8000)
    capsys.readouterr()
    assert main(["separate", "-q", "--run-id", run.run_id, str(song), "-o", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "config.json", needle)
    assert not (tmp_path / "out" / "song").exists()
