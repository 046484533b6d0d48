"""Folders sepray writes for a user (``sepray separate``'s song folders, ``sepray report --out``) and the one
rule for replacing them: only a folder holding sepray's manifest and nothing but the files that manifest lists
is ever replaced; anything else at the target (a file, a link, a folder of the user's, a sepray folder the
user added a file to) is an error naming it, and is left untouched. Imports only :mod:`sepray.errors` (and
sepray's version).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sepray.errors import UserPathError


@dataclass(frozen=True)
class FolderKind:
    """What wrote a folder: its manifest file's name and format, the command (for messages), and the hint
    that ends a refusal."""

    manifest: str
    format: str
    command: str
    hint: str


def check_replaceable(target: Path, kind: FolderKind, allow_empty: bool = False) -> bool:
    """May a new folder of ``kind`` be written at ``target``? False: nothing is there; True: ``target`` is a
    previous one (its manifest and only the files it lists; or, with ``allow_empty``, an empty folder) that
    will be replaced. Raises UserPathError (one line naming ``target``) for anything else there."""
    if not (target.exists() or target.is_symlink()):
        return False
    keep = f"not replacing it ({kind.hint})"
    if target.is_symlink() or not target.is_dir():
        raise UserPathError(f"{target}: exists and is not a folder written by {kind.command}; {keep}")
    if allow_empty and not any(target.iterdir()):
        return True
    try:
        manifest = json.loads((target / kind.manifest).read_text())
        listed = set(manifest["files"]) if manifest.get("format") == kind.format else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = None
    if listed is None:
        raise UserPathError(
            f"{target}: folder was not written by {kind.command} (no {kind.manifest}); {keep}"
        )
    extra = _unlisted(target, listed | {kind.manifest})
    if extra:
        raise UserPathError(
            f"{target}: holds files {kind.command} did not write ({', '.join(extra)}); {keep}"
        )
    return True


def write_manifest(folder: Path, kind: FolderKind, files: list[str] | None = None, **fields: Any) -> None:
    """Write ``folder``'s manifest listing ``files`` (relative POSIX paths; default: every file below it), the
    sepray version and ``fields``."""
    from sepray import __version__

    if files is None:
        files = [
            (Path(root) / name).relative_to(folder).as_posix()
            for root, _, names in os.walk(folder)
            for name in names
        ]
    files = sorted(f for f in files if f != kind.manifest)
    manifest = {"format": kind.format, "files": files, **fields, "sepray_version": __version__}
    (folder / kind.manifest).write_text(json.dumps(manifest, indent=2) + "\n")


def _unlisted(target: Path, listed: set[str]) -> list[str]:
    """Entries below ``target`` (relative POSIX paths) that are neither a listed file nor a folder holding one;
    a link is never listed. An unlisted folder is named once, not its content."""
    folders = {str(parent) for f in listed for parent in PurePosixPath(f).parents if str(parent) != "."}
    extra = []
    for root, dirs, files in os.walk(target):
        here = Path(root)
        for name in sorted(dirs) + sorted(files):
            rel = (here / name).relative_to(target).as_posix()
            wanted = folders if name in dirs else listed
            if (here / name).is_symlink() or rel not in wanted:
                extra.append(rel)
        dirs[:] = [d for d in dirs if (here / d).relative_to(target).as_posix() not in extra]
    return sorted(extra)
