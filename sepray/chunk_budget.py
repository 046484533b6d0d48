"""Chunk length from a memory budget: what ``sepray separate`` uses when no ``--chunk-seconds`` is given.

The working memory of one model call grows linearly with the chunk length. :func:`call_peak_bytes` measures
it exactly at the tensor level (every tensor the call creates, with its lifetime) on two short probe inputs,
and :func:`auto_chunk_seconds` picks the longest chunk whose estimate, with a margin for kernel workspaces,
allocator slack and library buffers, fits the budget. The budget excludes the model's weights, which are already loaded.
"""

from __future__ import annotations

import math
import re
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sepray.errors import UsageError
from sepray.models import Separator

DEFAULT_CAP = 2 * 2**30  # the default budget: half the free memory, at most 2 GiB
# estimate x MARGIN + OVERHEAD must fit the budget: kernel workspaces and allocator slack (peak RSS over the
# estimate, per extra second of audio: 0.96x for the paper WaveNet, 1.4x for waveunet-small) and library buffers
MARGIN = 1.5
OVERHEAD = 64 * 2**20
MAX_CHUNK_SECONDS = 30.0  # longer chunks are no faster
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"1.5GiB"``, ``"800000000"`` -> bytes (K/M/G/T are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    if not match or float(match[1]) <= 0:
        raise UsageError(f"memory size must be a positive number with an optional K/M/G/T unit, got {text!r}")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def format_memory(size: float) -> str:
    """Bytes -> ``"1.5 GiB"``."""
    for unit in ("GiB", "MiB", "KiB"):
        scale = _UNITS[unit[0]]
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"


def available_memory(device: torch.device | str = "cpu") -> int:
    """Free memory (bytes) on ``device``: CUDA's free memory, else the system's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_max_memory(device: torch.device | str = "cpu") -> int:
    """The default budget: half of :func:`available_memory`, at most :data:`DEFAULT_CAP` (2 GiB)."""
    return min(DEFAULT_CAP, available_memory(device) // 2)


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensors created inside the ``with`` block that were alive at the same time.

    Counts every storage an aten op returns until its last Python tensor is gone; tensors made before the
    block (weights, inputs) and buffers internal to one kernel are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, int] = {}
        self._sizes: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if not self._refs[key]:
            del self._refs[key]
            self.live -= self._sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key not in self._refs:
                    self._refs[key], self._sizes[key] = 0, storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                self._refs[key] += 1
                weakref.finalize(tensor, self._release, key)
        return out


@torch.no_grad()
def call_peak_bytes(model: Separator, output_length: int, device: torch.device | str = "cpu") -> int:
    """Peak working memory (bytes) of one ``decode(model(x))`` call of ``output_length`` output samples (at
    least; rounded up to a valid input), as :func:`sepray.separate.run_chunked` makes it."""
    model.eval()
    n_in = model.input_length(output_length)
    x = torch.zeros(1, model.audio_channels, n_in, device=device)  # (1, C, T_in)
    with LiveTensorBytes() as meter:
        model.decode(model(x)).float()
    return meter.peak


def auto_chunk_seconds(
    model: Separator,
    sample_rate: int,
    max_memory: int,
    device: torch.device | str = "cpu",
    channels: int = 2,
) -> float:
    """Longest chunk (seconds of output at ``sample_rate``) whose model call fits ``max_memory`` bytes.

    ``channels``: the song's channels; a mono model separates them as one batch. Never shorter than the
    model's step and receptive field (shorter chunks are valid but spend most of their time on context),
    never longer than 30 s.
    """
    step = model.step
    floor = max(step, model.receptive_field, 1024)
    base = -(-max(step, 1024) // step) * step  # probe output lengths: base and 2 * base
    low, high = call_peak_bytes(model, base, device), call_peak_bytes(model, 2 * base, device)
    batch = channels if model.audio_channels == 1 else 1
    per_sample = batch * max(high - low, 1) / base  # bytes per output sample
    fixed = batch * low - per_sample * base
    chunk = max(floor, math.floor(((max_memory - OVERHEAD) / MARGIN - fixed) / per_sample))
    return min(chunk, round(MAX_CHUNK_SECONDS * sample_rate)) / sample_rate
