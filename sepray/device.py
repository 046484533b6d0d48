"""Choosing the torch device (used by training and inference alike)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from sepray.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. Another device type, or a CUDA request on a machine without CUDA,
    is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # mps, meta, xpu ...: sepray runs on neither
        raise UsageError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r}: CUDA is not available on this machine")
    return device


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads (None: leave the setting alone), then restore it."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generation_threads(model, device: torch.device) -> int | None:
    """Threads for a model that generates sample by sample on the CPU: one (each step is too small to split;
    measured for a 30 s song with the default UMT decoder: ~6.5 min on 1 thread, ~1.6 h on 2), else None."""
    steps = getattr(model, "sequential_steps", lambda n: 0)(1)
    return 1 if steps and torch.device(device).type == "cpu" else None
