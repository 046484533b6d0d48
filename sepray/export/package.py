"""Exported graphs inside a model package: ``<package>/export/<format>/`` beside ``config.json`` and
``state_dict.pt`` (logged to a run as the artifact ``model/export/<format>/``).

:func:`load_package_engine` is what ``sepray separate --engine`` loads: the eager model, or an
:class:`~sepray.export.engine.ExportedSeparator` over the package's export of that format (made on the fly,
in a temporary folder, when the package has none). An export made from other weights than the package's
(``weights_sha256`` in ``export.json``) is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from sepray.errors import ExportError, UsageError
from sepray.export.engine import ENGINES, GRAPH_FILES, ExportedSeparator, check_format, graph_runner, require
from sepray.export.graph import EXPORT_FILE, EXPORT_FORMAT, EXPORT_FORMAT_VERSION, export_model
from sepray.models import Separator
from sepray.package import WEIGHTS_FILE, PackageInfo, load_package

EXPORT_DIR = "export"


def export_dir(package: str | os.PathLike, fmt: str) -> Path:
    """Where a package keeps its export of format ``fmt``: ``<package>/export/<fmt>``."""
    return Path(package) / EXPORT_DIR / check_format(fmt)


def weights_sha256(package: str | os.PathLike) -> str:
    """SHA-256 of the package's ``state_dict.pt`` (what an export was made from)."""
    digest = hashlib.sha256()
    with open(Path(package) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_package(package: str | os.PathLike, fmt: str, target: str | os.PathLike | None = None) -> Path:
    """Export the package's model to ``target`` (default :func:`export_dir`); returns that folder."""
    model, _ = load_package(package)
    target = export_dir(package, fmt) if target is None else Path(target)
    return export_model(model, fmt, target, weights_sha256(package))


def load_exported(model: Separator, folder: Path, fmt: str, weights: str | None = None) -> ExportedSeparator:
    """An :class:`ExportedSeparator` over ``model`` and the ``fmt`` export in ``folder``; ``weights``: the
    SHA-256 of the weights it must have been made from (:func:`weights_sha256`), checked when given."""
    path = folder / EXPORT_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: cannot read the export's description ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT or meta.get("engine") != fmt:
        raise ExportError(f'{path}: not a sepray {fmt} export (expected "format": "{EXPORT_FORMAT}")')
    if meta.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ExportError(
            f"{path}: export format version {meta.get('format_version')!r} is not supported (this sepray reads "
            f"version {EXPORT_FORMAT_VERSION}); export the run again"
        )
    if weights is not None and meta.get("weights_sha256") != weights:
        raise ExportError(
            f"{path}: made from other weights than the package's {WEIGHTS_FILE}; export it again"
        )
    graph = folder / GRAPH_FILES[fmt]
    if not graph.is_file():
        raise ExportError(f"{graph}: missing; the export holds {EXPORT_FILE} and {GRAPH_FILES[fmt]}")
    return ExportedSeparator(model, graph_runner(graph, fmt), fmt)


def load_package_engine(
    package: str | os.PathLike,
    engine: str = "torch",
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> tuple[Separator, PackageInfo]:
    """Load a package for separation with ``engine`` (torch | onnx | torch-export) -> (separator, info).

    An exported engine runs on the CPU only, and exports the model on the fly (``log`` says so) when the
    package holds no export of that format.
    """
    check_format(engine, ENGINES)
    if engine != "torch" and torch.device(device).type != "cpu":
        raise UsageError(
            f"--engine {engine} runs on the CPU; use --device cpu, or --engine torch on {device}"
        )
    if engine == "onnx":
        require("onnxruntime", "the onnx engine")  # before anything slow
    model, info = load_package(package, device)
    if engine == "torch":
        return model, info
    if export_dir(package, engine).is_dir():
        return load_exported(model, export_dir(package, engine), engine, weights_sha256(package)), info
    model.graph_cut()  # a model that cannot be exported says so first
    if log is not None:
        log(f"the model has no {engine} export: exporting it for this run only (`sepray export` keeps one)")
    with tempfile.TemporaryDirectory(prefix="sepray-export-") as tmp:
        folder = export_package(package, engine, Path(tmp) / engine)
        return load_exported(model, folder, engine), info
