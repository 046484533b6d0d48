"""Export a separator as a graph for fast CPU inference (``sepray export``) and run it (``sepray separate
--engine onnx|torch-export``).

What each model family exports is its :meth:`~sepray.models.base.Separator.graph_cut`: the STFT, iSTFT and
masking of the spectrogram models stay outside the graph (the exporters cannot take the iSTFT), everything
else is inside it, mu-law decoding included; the autoregressive UMT decoder cannot be exported (a one-line
ExportError says why). ``graph.py`` writes and checks graphs, ``engine.py`` runs them, ``package.py`` keeps
them in model packages, ``run.py`` is the command. The ``export`` extra (onnxruntime, onnx, onnxscript) is
needed for ONNX; ``torch-export`` needs torch only.
"""

from sepray.export.engine import ENGINES, FORMATS, ExportedSeparator
from sepray.export.graph import TOLERANCE, export_model
from sepray.export.package import export_package, load_package_engine

__all__ = [
    "ENGINES",
    "FORMATS",
    "TOLERANCE",
    "ExportedSeparator",
    "export_model",
    "export_package",
    "load_package_engine",
]
