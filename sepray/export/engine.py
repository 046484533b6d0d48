"""Running an exported graph: :class:`ExportedSeparator` is a separator whose graph part runs in ONNX Runtime or
as a loaded ``torch.export`` program, with the model's own code before and after it (the STFT, masking, iSTFT).

It has the eager model's geometry (valid lengths, ``step``, ``halo``), so chunked and streamed separation
(:mod:`sepray.separate`) treats it like any separator; its ``forward`` already returns decoded waveforms.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from sepray.errors import ExportError
from sepray.models import Separator

FORMATS = ("onnx", "torch-export")  # what `sepray export --format` writes
ENGINES = ("torch", *FORMATS)  # what `sepray separate --engine` runs: the eager model or an exported graph
GRAPH_FILES = {"onnx": "graph.onnx", "torch-export": "program.pt2"}
INSTALL_HINT = "pip install 'sepray[export]'"


def require(module: str, purpose: str):
    """Import an optional package of the ``export`` extra; ExportError naming the install command if absent."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(
            f"{purpose} needs the {module} package, which is not installed: {INSTALL_HINT}"
        ) from None


def check_format(fmt: str, choices: tuple[str, ...] = FORMATS) -> str:
    if fmt not in choices:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {', '.join(choices)}")
    return fmt


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` on ``threads`` threads (default: torch's thread count)."""
    ort = require("onnxruntime", "the onnx engine")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_runner(path: str | os.PathLike, fmt: str, threads: int | None = None) -> Callable:
    """Load the graph file ``path`` of format ``fmt`` -> a function (graph input) -> graph output (CPU tensors)."""
    check_format(fmt)
    if fmt == "onnx":
        session = onnx_session(path, threads)
        name = session.get_inputs()[0].name

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            feed = {name: x.detach().to("cpu", torch.float32).contiguous().numpy()}
            return torch.from_numpy(session.run(None, feed)[0])

        return run_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "buffer is not writable": the weights are only read
        program = torch.export.load(Path(path)).module()

    def run_program(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return program(x.detach().to("cpu", torch.float32))

    return run_program


class ExportedSeparator(Separator):
    """An eager separator whose :meth:`~sepray.models.base.Separator.graph_cut` part runs as an exported graph.

    mix (B, C, T) -> waveforms (B, S, C, T_out): the eager model's ``waveforms(forward(mix))`` (mu-law heads
    decoded in the graph), a regression head; ``decode`` clamps to [-1, 1] as the eager regression heads do.
    CPU only.
    """

    head = "regression"

    def __init__(self, eager: Separator, run: Callable[[torch.Tensor], torch.Tensor], engine: str) -> None:
        super().__init__()
        self.eager = eager.eval()
        self.config = eager.config
        self.step, self.halo = eager.step, eager.halo
        self.engine = engine
        self._run = run

    def output_length(self, input_length: int) -> int:
        return self.eager.output_length(input_length)

    def input_length(self, output_length: int) -> int:
        return self.eager.input_length(output_length)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, S, C, T_out)."""
        self.eager.check_input(mix)
        mix, length = mix.to("cpu"), mix.shape[-1]
        shortest = self.input_length(2)  # valid models: the graph starts at two output samples (GraphCut)
        if self.halo == 0 and length < shortest:
            out = self.output_length(length)
            return self.forward(torch.nn.functional.pad(mix, (0, shortest - length)))[..., :out]
        x, state = self.eager.graph_input(mix)
        return self.eager.graph_finish(self._run(x), state)

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, S, C, T) -> the same clamped to [-1, 1]."""
        return output.clamp(-1.0, 1.0)
