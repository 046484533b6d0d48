"""Writing a separator's graph: ``torch.export`` of its :class:`~sepray.models.base.GraphCut` with a dynamic batch
and length, saved as ONNX (``graph.onnx``, run by ONNX Runtime) or as a ``torch.export`` program
(``program.pt2``: the graph as JSON and the weights as raw tensor bytes, no pickled classes), plus
``export.json``. Every export is checked against the eager model before it is kept.

``export.json``: ``format`` / ``format_version``, ``engine`` (onnx | torch-export), ``file``, the graph input's
dynamic axes (``graph_input``: time axis, shortest length, length step), the sepray / torch (/ opset) versions,
``weights_sha256`` (the package's ``state_dict.pt`` the graph was made from) and ``check`` (the inputs compared
and the largest difference from the eager model).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import torch

import sepray
from sepray.atomic import folder_written_atomically
from sepray.errors import ExportError
from sepray.export.engine import GRAPH_FILES, ExportedSeparator, check_format, graph_runner, require
from sepray.models import Separator
from sepray.models.base import GraphCut

EXPORT_FORMAT = "sepray-export"
EXPORT_FORMAT_VERSION = 1
EXPORT_FILE = "export.json"
TOLERANCE = 1e-4  # largest difference from the eager model's waveforms an export may have
ARGMAX_MISMATCH = 1e-3  # argmax mu-law decoding: fraction of samples allowed to land in a neighbouring class
ONNX_OPSET = 18


def _dynamic_shape(cut: GraphCut) -> dict[int, object]:
    """Dynamic axes of the graph input: batch (axis 0) and length ``min_length + k * length_step``."""
    Dim = torch.export.Dim
    if cut.length_step == 1:
        length = Dim("length", min=cut.min_length)
    else:
        length = cut.length_step * Dim("k", min=0) + cut.min_length
    return {0: Dim("batch", min=1), cut.time_axis: length}


def example_mix(model: Separator, batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    """A random mixture (batch, audio_channels, shortest valid length + ``steps`` steps) in [-0.5, 0.5]."""
    gen = torch.Generator().manual_seed(seed)
    length = model.input_length(1) + steps * model.step
    return torch.rand(batch, model.audio_channels, length, generator=gen) - 0.5


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters print progress to stdout and warn about optional packages: keep stdout for results."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def write_graph(
    core: torch.nn.Module, example: torch.Tensor, cut: GraphCut, fmt: str, path: Path, optimize: bool = True
) -> dict:
    """Export ``core`` (traced on ``example``) to ``path``; returns the format's facts for ``export.json``.
    ``optimize``: ONNX only, run onnxscript's graph optimizer (it folds batch norm into the convolutions)."""
    dynamic = (_dynamic_shape(cut),)
    with torch.no_grad(), _quiet_exporter():
        if fmt == "torch-export":
            # as torch.onnx.export does: a guard the symbolic shapes cannot prove (e.g. min(N, 16 N) == N after a
            # flatten) becomes a check at run time instead of failing the export
            program = torch.export.export(
                core, (example,), dynamic_shapes=dynamic, prefer_deferred_runtime_asserts_over_guards=True
            )
            torch.export.save(program, path)
            return {}
        require("onnxscript", "exporting to onnx")
        require("onnx", "exporting to onnx")
        torch.onnx.export(
            core, (example,), str(path), dynamo=True, dynamic_shapes=dynamic, input_names=["input"],
            output_names=["output"], opset_version=ONNX_OPSET, external_data=False, verbose=False,
            optimize=optimize,
        )  # fmt: skip
    return {"onnx_opset": ONNX_OPSET, "onnx_optimized": optimize}


@torch.no_grad()
def compare_with_eager(model: Separator, exported: Separator) -> dict:
    """Run both on two mixtures (the shortest valid length, batch 1; a longer one, batch 3) -> the check
    (the waveforms before a regression head's clamp, so every sample is compared)."""
    worst, mismatched, total, lengths = 0.0, 0, 0, []
    for batch, steps, seed in ((1, 0, 1), (3, 9, 2)):
        mix = example_mix(model, batch, steps, seed)
        expected, got = model.waveforms(model(mix)).float(), exported(mix)  # unclamped: decode only clamps
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported graph gave shape {tuple(got.shape)}, eager {tuple(expected.shape)}"
            )
        diff = (got - expected).abs()
        worst = max(worst, float(diff.max()))
        mismatched += int((diff > TOLERANCE).sum())
        total += diff.numel()
        lengths.append(mix.shape[-1])
    return {"input_lengths": lengths, "max_abs_diff": worst, "mismatch_fraction": mismatched / total}


def _check_passes(model: Separator, check: dict) -> bool:
    """Within :data:`TOLERANCE` of the eager model (argmax decoding: at most :data:`ARGMAX_MISMATCH` of the
    samples in a neighbouring class)."""
    argmax = model.head == "mulaw" and getattr(model.config, "decode_mode", "") == "argmax"
    return check["max_abs_diff"] <= TOLERANCE or (argmax and check["mismatch_fraction"] <= ARGMAX_MISMATCH)


def export_model(
    model: Separator, fmt: str, directory: str | os.PathLike, weights_sha256: str | None = None
) -> Path:
    """Export ``model`` as ``directory/<graph file>`` + ``directory/export.json`` (written atomically); checked
    against the eager model first. ExportError (one line) for a model that cannot be exported."""
    check_format(fmt)
    model = model.to("cpu").eval()
    cut = model.graph_cut()
    example, _ = model.graph_input(example_mix(model, 2, 3))
    with folder_written_atomically(directory) as tmp:
        graph = tmp / GRAPH_FILES[fmt]
        # onnxscript's optimizer takes an added constant within 1e-8 of zero for a no-op (its pattern constants'
        # abs_tol): it dropped stft_mask's mask_eps. An optimized graph the check refuses is made again without it.
        for optimize in (True, False) if fmt == "onnx" else (True,):
            try:
                facts = write_graph(cut.core, example, cut, fmt, graph, optimize)
            except ExportError:
                raise
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ExportError(f"{type(model).__name__} could not be exported to {fmt}: {first}") from None
            check = compare_with_eager(model, ExportedSeparator(model, graph_runner(graph, fmt), fmt))
            if _check_passes(model, check):
                break
        else:
            raise ExportError(
                f"the {fmt} export differs from the eager model by up to {check['max_abs_diff']:.3g} "
                f"(at most {TOLERANCE:g} allowed); not kept"
            )
        meta = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "engine": fmt,
            "file": graph.name,
            "graph_input": {
                "time_axis": cut.time_axis,
                "min_length": cut.min_length,
                "length_step": cut.length_step,
            },
            "sepray_version": sepray.__version__,
            "torch_version": torch.__version__,
            "weights_sha256": weights_sha256,
            "check": check,
            **facts,
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return Path(directory)
