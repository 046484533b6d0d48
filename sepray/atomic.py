"""Write a whole folder or file or nothing: build it under a temporary name beside its target, then rename it in.

A write that runs out of disk space leaves nothing behind and raises :class:`sepray.errors.NoSpaceError` naming
the target (one line, "no space left on device"). Imports only :mod:`sepray.errors`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from sepray.errors import NoSpaceError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    return isinstance(exc, NoSpaceError) or (isinstance(exc, OSError) and exc.errno in NO_SPACE)


def no_space_error(path: str | os.PathLike) -> NoSpaceError:
    """The one-line error for a write to ``path`` that ran out of space (naming what is free there now)."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free there"
    except OSError:
        free = "free space unknown"
    return NoSpaceError(f"{path}: no space left on device ({free}); nothing was written")


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The nearest existing parent of ``path`` when it is not a folder (so ``path`` cannot be created)."""
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return None if parent.is_dir() else parent


@contextlib.contextmanager
def folder_written_atomically(
    directory: str | os.PathLike, may_replace: Callable[[Path], object] | None = None
) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``directory``, on any error it is removed.

    A folder already at ``directory`` is moved aside first and deleted only once the new one is in place.
    With ``may_replace``, whatever sits at ``directory`` is replaced only after ``may_replace(directory)``
    returns; it raises to keep that entry untouched (the new folder is then discarded).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes owner-only folders; outputs are ordinary folders
    try:
        yield tmp
        old = None
        if directory.exists() or directory.is_symlink():
            if may_replace is not None:
                may_replace(directory)
            old = Path(tempfile.mkdtemp(prefix=f".old-{directory.name}-", dir=directory.parent))
            os.replace(directory, old / directory.name)
        try:
            os.replace(tmp, directory)
        except BaseException:
            if old is not None:  # put the old entry back rather than lose it
                os.replace(old / directory.name, directory)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if out_of_space(exc):
            raise no_space_error(directory) from None
        raise


@contextlib.contextmanager
def file_written_atomically(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path``, on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", suffix=suffix, dir=path.parent)
    except OSError as exc:
        if out_of_space(exc):
            raise no_space_error(path) from None
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes owner-only files; outputs are ordinary files
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if out_of_space(exc):
            raise no_space_error(path) from None
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old content or the new, never a part."""
    with file_written_atomically(path) as tmp:
        tmp.write_text(text)
