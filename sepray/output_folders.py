"""The inputs and output folders of ``sepray separate``: what is checked before anything is written, and
what may be replaced (only a previous separation: a folder holding its manifest and nothing but the files the
manifest lists). Nothing here removes a file separate did not write.
"""

from __future__ import annotations

import json
from pathlib import Path

from sepray.atomic import file_in_the_way
from sepray.audio import AudioError, audio_info, check_audio_path
from sepray.errors import UserPathError


def check_inputs(paths: list[Path]) -> None:
    """Fail (one line naming the file) before anything is written when an input cannot be separated."""
    if not paths:
        raise AudioError("no input files given")
    for path in paths:
        check_audio_path(path)
        _, _, frames = audio_info(path)
        if frames == 0:
            raise AudioError(f"{path}: empty audio file (0 samples)")
    names = [p.stem for p in paths]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise AudioError(f"two inputs would write the same output folder {sorted(dupes)[0]!r}; rename one")


SEPARATION_MANIFEST = ".sepray-separation.json"
"""Written inside every output folder of :func:`separate_file`: its format and the files it wrote. Only a
folder holding it and nothing but the files it lists is ever replaced by a new separation."""
SEPARATION_FORMAT = "sepray-separation"


def check_output_root(outdir: Path) -> None:
    """UserPathError (one line naming the path) when the ``-o`` folder cannot be a folder."""
    if outdir.exists() and not outdir.is_dir():
        raise UserPathError(f"{outdir}: exists and is not a folder; the output (-o) must be a folder")
    blocker = file_in_the_way(outdir)
    if blocker is not None:
        raise UserPathError(f"{blocker}: is not a folder, cannot create the output folder {outdir}")


def check_output_folder(target: Path, inputs: list[Path]) -> bool:
    """May a separation be written to ``target``? False: nothing is there; True: ``target`` is a previous
    separation (its manifest and only the files it lists) that will be replaced.

    Raises UserPathError (one line naming ``target``) for anything else there, which is never removed: one of
    the ``inputs`` or a folder holding one, a file, a link, a folder without the manifest or with other files.
    """
    dst = target.resolve()
    for source in inputs:
        src = source.resolve()
        if src == dst:
            raise UserPathError(
                f"{target}: is the input file itself; not replacing it (choose another -o folder)"
            )
        if dst in src.parents:
            raise UserPathError(
                f"{target}: holds the input {source}; not replacing it (choose another -o folder)"
            )
    if not (target.exists() or target.is_symlink()):
        return False
    keep = "not replacing it (move it away or choose another -o folder)"
    if target.is_symlink() or not target.is_dir():
        raise UserPathError(f"{target}: exists and is not a folder written by sepray separate; {keep}")
    try:
        manifest = json.loads((target / SEPARATION_MANIFEST).read_text())
        written = set(manifest["files"]) if manifest.get("format") == SEPARATION_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        written = None
    if written is None:
        raise UserPathError(
            f"{target}: folder was not written by sepray separate (no {SEPARATION_MANIFEST}); {keep}"
        )
    extra = sorted(p.name for p in target.iterdir() if p.name not in written | {SEPARATION_MANIFEST})
    if extra:
        raise UserPathError(
            f"{target}: holds files sepray separate did not write ({', '.join(extra)}); {keep}"
        )
    return True


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_if_failed(created: list[Path], exc_type: type[BaseException] | None, *exc_info) -> None:
    """An exit callback: after an error, remove the (empty) folders listed in ``created``, deepest first."""
    if exc_type is None:
        return
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break
