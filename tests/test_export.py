"""Exported graphs (sepray/export): every exportable family, as ONNX (run by ONNX Runtime) and as a torch.export
program, gives the eager model's waveforms within 1e-4 at any valid length and batch, one call or chunked;
what cannot be exported or used is a one-line ExportError."""

from __future__ import annotations

import json

import pytest
import torch

from sepray.errors import ExportError
from sepray.export import TOLERANCE, export_model, export_package, load_package_engine
from sepray.export.engine import ENGINES, GRAPH_FILES
from sepray.export.graph import EXPORT_FILE
from sepray.export.package import export_dir, load_exported
from sepray.models import build_model
from sepray.package import WEIGHTS_FILE, save_package
from sepray.separate import run_chunked
from tests.models.test_models import CASES, make, random_mix

# one tiny configuration per family (and each way a family cuts its graph: whole, after the STFT, masks only)
FAMILY_CASES = [
    "wavenet-mulaw",
    "wavenet-stft-regression-stereo",
    "waveunet",
    "waveunet-same-learned-difference",
    "stft_mask-stereo-odd-reach",
    "spec_unet-stereo-wiener-odd-bins",
    "structure_a",
    "umt-separator-pool4",
]
TORCH_EXPORT_CASES = ["wavenet-stft-regression-stereo", "spec_unet-stereo-wiener-odd-bins"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(case, format) -> (eager model, its export folder), each exported once per module."""
    made = {}

    def get(case: str, fmt: str):
        if (case, fmt) not in made:
            model = make(case).eval()
            made[case, fmt] = model, export_model(model, fmt, tmp_path_factory.mktemp("export") / fmt)
        return made[case, fmt]

    return get


def assert_equal_to_eager(model, engine) -> None:
    """One call at three valid lengths and batch sizes (the shortest length included), unclamped and decoded,
    and a long signal separated in several chunks of two chunk lengths, as ``sepray separate`` runs them."""
    with torch.no_grad():
        for batch, steps in ((1, 0), (2, 5), (3, 41)):
            mix = random_mix(model, model.input_length(1) + steps * model.step, batch, seed=steps)
            got, want = engine(mix), model(mix)
            assert (got - model.waveforms(want)).abs().max() <= TOLERANCE, (batch, mix.shape[-1])
            assert (engine.decode(got) - model.decode(want)).abs().max() <= TOLERANCE
        mix = 4 * random_mix(model, 5 * model.input_length(64) + 3, 2, seed=7)  # beyond full scale
        for chunk, clamp in ((64, True), (3 * model.step + 5, False)):
            want, got = (
                run_chunked(model, mix, chunk, clamp=clamp),
                run_chunked(engine, mix, chunk, clamp=clamp),
            )
            assert (got - want).abs().max() <= TOLERANCE, chunk


@pytest.mark.parametrize("case", FAMILY_CASES)
def test_onnx_export_equals_eager(case, exports):
    model, folder = exports(case, "onnx")
    assert_equal_to_eager(model, load_exported(model, folder, "onnx"))
    meta = json.loads((folder / EXPORT_FILE).read_text())
    assert meta["engine"] == "onnx" and (folder / meta["file"]).is_file()
    assert meta["check"]["max_abs_diff"] <= TOLERANCE


@pytest.mark.parametrize("case", TORCH_EXPORT_CASES)
def test_torch_export_equals_eager(case, exports):
    model, folder = exports(case, "torch-export")
    assert_equal_to_eager(model, load_exported(model, folder, "torch-export"))
    assert (folder / GRAPH_FILES["torch-export"]).is_file()


def test_spectrogram_models_keep_the_stft_outside_the_graph(exports):
    """The ONNX graph of an STFT family takes magnitudes (B, C, bins, frames) and holds no STFT / DFT node; the
    graph optimizer has folded the batch norms (the export is the fast graph)."""
    import onnx  # the export extra (in dev)

    model, folder = exports("spec_unet-stereo-wiener-odd-bins", "onnx")
    graph = onnx.load(str(folder / GRAPH_FILES["onnx"])).graph
    shape = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert shape[1:3] == [model.audio_channels, model.config.n_fft // 2 + 1]
    assert isinstance(shape[0], str) and isinstance(shape[3], str)  # dynamic batch and frames
    ops = {node.op_type for node in graph.node}
    assert not {"STFT", "DFT"} & ops
    assert "BatchNormalization" not in ops and "Conv" in ops  # batch norm folded into the convolutions


def test_autoregressive_umt_cannot_be_exported_and_says_why(tmp_path):
    name, cfg = CASES["umt-separator-pool4"]
    torch.manual_seed(0)
    model = build_model(name, {**cfg, "decoder": "autoregressive"})
    with pytest.raises(ExportError) as info:
        export_model(model, "onnx", tmp_path / "onnx")
    message = str(info.value)
    assert "autoregressive" in message and "--engine torch" in message and "\n" not in message
    assert not (tmp_path / "onnx").exists()


def test_package_export_is_found_checked_and_refused_for_other_weights(tmp_path):
    torch.manual_seed(0)
    model = make("waveunet")
    package = save_package(model, tmp_path / "pkg", "waveunet", 8000)
    folder = export_package(package, "torch-export")
    assert folder == export_dir(package, "torch-export")
    engine, info = load_package_engine(package, "torch-export")
    assert engine.engine == "torch-export" and info.model == "waveunet"
    assert_equal_to_eager(model.eval(), engine)
    state = torch.load(package / WEIGHTS_FILE, weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, package / WEIGHTS_FILE)
    with pytest.raises(ExportError, match="made from other weights"):
        load_package_engine(package, "torch-export")


def test_a_package_without_export_is_exported_on_the_fly(tmp_path):
    package = save_package(make("spec_unet"), tmp_path / "pkg", "spec_unet", 8000)
    said = []
    engine, _ = load_package_engine(package, "torch-export", log=said.append)
    assert said and "no torch-export export" in said[0]
    assert not (package / "export").exists()  # nothing written into the package
    eager, _ = load_package_engine(package, "torch")
    assert_equal_to_eager(eager, engine)


def test_engine_errors_are_one_line(tmp_path, monkeypatch):
    package = save_package(make("waveunet"), tmp_path / "pkg", "waveunet", 8000)
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        load_package_engine(package, "tflite")
    with pytest.raises(ValueError, match="runs on the CPU"):
        load_package_engine(package, "onnx", device="meta")
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as if the extra were not installed
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)
    with pytest.raises(ExportError) as info:
        load_package_engine(package, "onnx")
    assert "pip install 'sepray[export]'" in str(info.value) and "\n" not in str(info.value)


def test_cli_engine_choices_are_the_engines():
    from sepray.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    separate = next(a for a in sub["separate"]._actions if a.dest == "engine")
    export = next(a for a in sub["export"]._actions if a.dest == "format")
    assert tuple(separate.choices) == ENGINES and tuple(export.choices) == ENGINES[1:]
