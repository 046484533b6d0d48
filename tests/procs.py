"""Processes a test started: find everything below one (from /proc) and stop it (never `ray stop`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def _proc_stat(pid: int) -> tuple[str, int]:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])  # state, parent pid


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                children.setdefault(_proc_stat(int(name))[1], []).append(int(name))
            except (OSError, ValueError):
                continue
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        return _proc_stat(pid)[0] != "Z"
    except (OSError, ValueError):
        return False


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session and everything below it (never `ray stop`)."""
    below = descendants(proc.pid)
    if proc.poll() is None:
        proc.terminate()  # the leader shuts its children down (`ray start --block` drains, then stops its node)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in below):
        time.sleep(0.3)
    for pid in below:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def _hex_address(text: str) -> str:
    """``0100007F`` / a 32-hex-digit IPv6 word list from /proc/net/tcp* -> a printable address."""
    import ipaddress

    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def listening_sockets(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket in LISTEN state owned by one of ``pids``."""
    inodes: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":  # TCP_LISTEN
                address, port = fields[1].split(":")
                inodes[fields[9]] = (_hex_address(address), int(port, 16))
    out = []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    out.append((*inodes[target[8:-1]], name))
        except OSError:
            continue
    return sorted(out)
