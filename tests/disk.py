"""Filesystems a test makes for itself: a small disk for tests of what a full disk does (a tmpfs of a few hundred
KiB mounted on a test's folder), and a read-only view of a folder.

Mounting needs root (CAP_SYS_ADMIN); where it is not permitted the test is skipped with that reason. Root
ignores file permissions, so a read-only folder is a read-only bind mount there, and ``chmod`` elsewhere."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(path: Path, size: str = "256k") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``path`` (created) for the block; unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("filling a disk needs a small tmpfs, and mounting one needs root: not root here")
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill a disk here: {mount.stderr.strip() or mount.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` until at most ``leave`` bytes are free (a file named ``filler``)."""
    with (disk / "filler").open("wb") as f:
        with contextlib.suppress(OSError):
            while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave:
                f.write(b"\0" * 4096)
                f.flush()


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` and everything in it cannot be written for the block."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield folder
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount a folder read-only here: {bind.stderr.strip() or bind.returncode}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)
