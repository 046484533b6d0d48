"""Write a whole folder or nothing: build it under a temporary name beside its target, then rename it in."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def folder_written_atomically(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``directory``, on any error it is removed.

    A folder already at ``directory`` is moved aside first and deleted only once the new one is in place.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes owner-only folders; outputs are ordinary folders
    try:
        yield tmp
        old = None
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{directory.name}-", dir=directory.parent))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
