"""The inputs and output folders of ``sepray separate``: what is checked before anything is written, what
may be replaced (only a previous separation: a folder holding its manifest and nothing but the files the
manifest lists, :mod:`sepray.owned_folders`), and the temporary song folders (``OUT/.tmp-<song>-*``): locked
by the process writing them, and removed by a later run once that process is gone (killed before it could
clean up). Nothing here removes a file separate did not write.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sepray.atomic import file_in_the_way, folder_written_atomically
from sepray.audio import AudioError, audio_info, check_audio_path
from sepray.errors import UserPathError
from sepray.owned_folders import FolderKind, check_replaceable


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


def check_separation(paths: list[Path], outdir: Path, log: Callable[[str], None] | None = None) -> None:
    """Everything ``sepray separate`` checks before it loads a model: the inputs (:func:`check_inputs`), the
    ``-o`` folder and each song's folder in it; then the partial separations killed runs left there go."""
    check_inputs(paths)
    check_output_root(outdir)
    for path in paths:
        check_output_folder(outdir / path.stem, paths)
    remove_stale_partials(outdir, log)


SEPARATION = FolderKind(
    manifest=".sepray-separation.json",
    format="sepray-separation",
    command="sepray separate",
    hint="move it away or choose another -o folder",
)
"""Every song folder :func:`sepray.separate.separate_file` writes holds this manifest: its format and the files
it wrote. Only a folder holding it and nothing but the files it lists is ever replaced by a new separation."""
SEPARATION_MANIFEST, SEPARATION_FORMAT = SEPARATION.manifest, SEPARATION.format


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
    return check_replaceable(target, SEPARATION)


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


PARTIAL_MARK = ".sepray-partial.json"
"""Inside a temporary song folder while a separation writes it, locked (``flock``) by the writing process."""
PARTIAL_FORMAT = "sepray-partial-separation"


@contextlib.contextmanager
def song_folder_written(target: Path, inputs: list[Path]) -> Iterator[Path]:
    """Yield the temporary folder (``OUT/.tmp-<song>-*``) a separation writes; renamed to ``target`` when the
    block ends without an error (replacing only a previous separation, checked again just before), removed on
    an error. While it is written it holds :data:`PARTIAL_MARK`, locked by this process, so that
    :func:`remove_stale_partials` of another run leaves it alone; the mark goes before the rename."""
    replace_check = functools.partial(check_output_folder, inputs=inputs)
    with folder_written_atomically(target, replace_check) as tmp, _partial_mark(tmp, inputs):
        yield tmp


@contextlib.contextmanager
def _partial_mark(folder: Path, inputs: list[Path]) -> Iterator[None]:
    fd, name = tempfile.mkstemp(prefix=".lock-", dir=folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # before it has its recognisable name: nobody else can hold it
        mark = {"format": PARTIAL_FORMAT, "pid": os.getpid(), "host": socket.gethostname()}
        mark |= {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "inputs": [str(p) for p in inputs]}
        os.write(fd, json.dumps(mark).encode())
        os.replace(name, folder / PARTIAL_MARK)
        yield
        os.unlink(folder / PARTIAL_MARK)  # complete: no longer a partial separation
    finally:
        os.close(fd)  # releases the lock


def remove_stale_partials(outdir: Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the temporary song folders in ``outdir`` that a separation left when it was killed (SIGKILL, a
    crash, a power cut): those holding :data:`PARTIAL_MARK` whose lock nobody holds any more and nothing but
    files. A folder a live separation is writing (its lock held, in this or another process) and anything not
    recognisably a partial separation are left alone. ``log`` gets a line per folder removed."""
    removed = []
    for folder in sorted(outdir.glob(".tmp-*")) if outdir.is_dir() else []:
        mark = folder / PARTIAL_MARK
        if folder.is_symlink() or not mark.is_file() or mark.is_symlink():
            continue
        try:
            fd = os.open(mark, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(mark).st_ino:  # the mark went: that separation completed
                continue
            info = json.loads(mark.read_text())
            if info.get("format") != PARTIAL_FORMAT or any(not _plain_file(p) for p in folder.iterdir()):
                continue
            shutil.rmtree(folder)  # holding the lock
        except (OSError, ValueError, AttributeError):
            continue  # locked by a live separation, gone meanwhile, or not ours: left alone
        finally:
            os.close(fd)
        removed.append(folder)
        if log is not None:
            log(
                f"removed {folder}: a partial separation left by process {info.get('pid')} on "
                f"{info.get('host')} (started {info.get('started')}), which did not finish"
            )
    return removed


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()
