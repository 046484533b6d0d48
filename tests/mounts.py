"""Filesystems a test makes for itself: a small tmpfs (a disk that fills up) and a read-only view of a folder.

Mounting needs root (CAP_SYS_ADMIN); where it is not permitted the test is skipped with that reason. Root
ignores file permissions, so a read-only folder is a read-only bind mount there, and ``chmod`` elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"mount {' '.join(args)} needs root: this test runs as uid {os.geteuid()}")
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} is not permitted here: {proc.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)  # lazy: an open sqlite file may stay


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``, e.g. ``256k``) mounted at ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` with one file of zeros until it has no space left."""
    filler = folder / "filler"
    for chunk in (65536, 1):  # then byte by byte into the last partial block
        try:
            with open(filler, "ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` and everything in it cannot be written for the block."""
    if os.geteuid() == 0:
        _mount("--bind", str(folder), str(folder))
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
            yield folder
        finally:
            _umount(folder)
        return
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for p, mode in modes.items():
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield folder
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
