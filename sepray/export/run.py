"""``sepray export``: export a run's model package and log the export back to the run as the artifact
``model/export/<format>/`` (where ``sepray separate --engine <format>`` finds it); ``-o DIR`` also writes a
self-contained copy of the package with its export (``config.json``, ``state_dict.pt``, ``export/<format>/``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sepray import names
from sepray.atomic import folder_written_atomically
from sepray.errors import UserPathError
from sepray.export.engine import check_format
from sepray.export.package import EXPORT_DIR, export_package
from sepray.package import run_package


def check_new_folder(path: Path) -> None:
    """``-o``: a folder that does not exist yet (or is empty), so nothing of the user's is replaced."""
    if path.is_symlink() or (path.exists() and not (path.is_dir() and not any(path.iterdir()))):
        raise UserPathError(f"{path}: already exists; the export writes a new folder (choose another -o)")


def export_run(
    run_id: str, fmt: str = "onnx", out: str | os.PathLike | None = None, uri: str | None = None
) -> tuple[str, Path | None]:
    """Export run ``run_id``'s model as ``fmt``, log it to the run, copy the package to ``out`` when given.

    Returns (the artifact path in the run, the folder written or None). Nothing is logged or written when the
    export fails (ExportError, one line: e.g. a family that cannot be exported)."""
    from sepray import tracking

    check_format(fmt)
    out = None if out is None else Path(out)
    if out is not None:
        check_new_folder(out)
    artifact = f"{names.PACKAGE}/{EXPORT_DIR}/{fmt}"
    with run_package(run_id, uri) as package:
        folder = export_package(package, fmt)
        tracking.attach_run(run_id, uri).log_artifacts(folder, artifact)
        if out is not None:
            with folder_written_atomically(out, check_new_folder) as tmp:
                shutil.copytree(package, tmp, dirs_exist_ok=True)
    return artifact, out
