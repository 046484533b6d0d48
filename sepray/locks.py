"""One process at a time on a sweep's storage or a training run's checkpoints: an advisory lock file.

The lock is ``flock`` on a small file that also says who holds it (pid, host, start time, command), so the
second process refuses at once with one line naming the first. The kernel releases an ``flock`` when its holder
dies in any way (SIGKILL, a crash, the machine's reboot), so a lock left by a killed process never blocks the
next one: the file stays, unlocked, and the next holder rewrites it (no pid guessing, no timeouts). A holder
that ends normally removes the file. Locks on NFS work where the mount supports them (Linux maps ``flock`` to
NFS byte-range locks); a filesystem that refuses locks gets a warning and no lock. Imports only errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sepray.errors import UserError


class LockedError(UserError, RuntimeError):
    """Another live process holds the lock; the one-line message names it (pid, host, since when)."""


def holder_text(path: Path) -> str:
    """``pid 123 on host h since 2026-12-03 07:40:12 (sepray sweep x.yaml)`` from a lock file, or what is known."""
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        text = f"pid {info['pid']} on host {info['host']} since {since}"
        return f"{text} ({info['command']})" if info.get("command") else text
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names no holder yet)"


def _try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its ``flock``; None while another process holds it."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)  # (again, if the holder before us removed it)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # the holder before us may have removed the file after we opened it: lock the file at the path
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def held_lock(path: str | os.PathLike, what: str, hint: str = "") -> Iterator[Path]:
    """Hold the lock at ``path`` for the block; LockedError ``{what} is in use by pid ...{hint}`` when a live
    process holds it. ``what`` names the resource (``sweep x (storage ray_results/x)``). Folders made for the
    lock file are removed with it when they are empty."""
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # innermost first
    try:
        fd = _try_lock(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EROFS):
            raise
        fd, why = -1, exc.strerror
    if fd is None:
        raise LockedError(f"{what} is in use by {holder_text(path)}; lock {path}{hint}")
    if fd < 0:
        print(
            f"sepray: warning: cannot lock {path} ({why}); {what} is not kept from a second process",
            file=sys.stderr,
        )
        yield path
        return
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300] if sys.argv else "",
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # under the lock: a process waiting on the old file sees it gone and retries
        os.close(fd)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty (checkpoints, trial folders): kept
                break
