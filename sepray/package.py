"""A saved model is plain data: ``config.json`` + ``state_dict.pt`` (tensors only, loaded with weights_only=True).

``config.json`` holds the model name, its config, the sample rate, audio channels, the sources it predicts,
the package format version and the sepray version that wrote it. No classes are pickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import sepray
from sepray.atomic import folder_written_atomically
from sepray.errors import ExportError, UserError
from sepray.models import REGISTRY, Separator, build_model

FORMAT = "sepray-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "state_dict.pt"


class PackageError(UserError, ValueError):
    """A model package that cannot be loaded; the message names the file."""


@dataclass(frozen=True)
class PackageInfo:
    model: str
    config: dict[str, Any]
    sample_rate: int
    audio_channels: int
    sources: tuple[str, ...]
    format_version: int = FORMAT_VERSION
    sepray_version: str = sepray.__version__


def save_package(model: Separator, directory: str | os.PathLike, model_name: str, sample_rate: int) -> Path:
    """Write ``directory/config.json`` and ``directory/state_dict.pt`` atomically (temp dir + rename)."""
    directory = Path(directory)
    info = PackageInfo(
        model=model_name,
        config=json.loads(json.dumps(asdict(model.config))),
        sample_rate=int(sample_rate),
        audio_channels=model.audio_channels,
        sources=tuple(model.sources),
    )
    with folder_written_atomically(directory) as tmp:
        meta = {"format": FORMAT, **asdict(info), "sources": list(info.sources)}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        torch.save(state, tmp / WEIGHTS_FILE)
    return directory


def read_package_info(directory: str | os.PathLike) -> PackageInfo:
    """Parse and check ``config.json``; PackageError names the file and what was expected."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise PackageError(f"{path}: missing; a sepray model package holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise PackageError(f"{path}: not UTF-8 text, not a sepray model package") from None
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(meta, dict) and meta.get("format") == "sepray-ensemble":  # sepray.ensemble.package.FORMAT
        raise PackageError(
            f"{path}: an ensemble of models, not one model: `sepray separate` and `sepray evaluate` take its run, "
            "`sepray export` takes each member's run"
        )
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PackageError(f'{path}: not a sepray model package (expected "format": "{FORMAT}")')
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(
            f"{path}: package format version {version!r} is not supported "
            f"(this sepray {sepray.__version__} reads version {FORMAT_VERSION})"
        )
    if meta.get("model") not in REGISTRY:
        raise PackageError(f"{path}: unknown model {meta.get('model')!r}; expected one of {sorted(REGISTRY)}")
    try:
        info = PackageInfo(
            model=meta["model"],
            config=dict(meta["config"]),
            sample_rate=int(meta["sample_rate"]),
            audio_channels=int(meta["audio_channels"]),
            sources=tuple(meta["sources"]),
            format_version=version,
            sepray_version=str(meta.get("sepray_version", "unknown")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"{path}: missing or invalid field ({exc})") from None
    for key, value in (("sample_rate", info.sample_rate), ("audio_channels", info.audio_channels)):
        if value < 1 or value != meta[key]:
            raise PackageError(f"{path}: {key} must be a whole number >= 1, got {meta[key]!r}")
    if not info.sources or not all(isinstance(s, str) for s in info.sources):
        raise PackageError(
            f"{path}: sources must be a non-empty list of source names, got {meta['sources']!r}"
        )
    return info


def load_package(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[Separator, PackageInfo]:
    """Rebuild the model from ``config.json`` and load ``state_dict.pt`` with ``weights_only=True``."""
    info = read_package_info(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise PackageError(f"{weights}: missing model weights")
    try:
        model = build_model(info.model, info.config)
    except ValueError as exc:
        raise PackageError(f"{Path(directory) / CONFIG_FILE}: {exc}") from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise PackageError(f"{weights}: cannot load weights ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), info


@contextlib.contextmanager
def run_package(run_id: str, uri: str | None = None) -> Iterator[Path]:
    """Download the model package (``model/``, with its exports) of MLflow run ``run_id`` into a temporary folder
    for the ``with`` block; a package or export error in it names the run's artifact, not the temporary path."""
    from sepray import tracking

    with tempfile.TemporaryDirectory(prefix="sepray-package-") as tmp:
        package = tracking.download_package(run_id, tmp, uri)
        try:
            yield package
        except (PackageError, ExportError) as exc:
            where = f"run {run_id}: artifact {package.name}"
            raise type(exc)(str(exc).replace(str(package), where)) from None
