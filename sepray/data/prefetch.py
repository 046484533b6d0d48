"""Training batches drawn ahead of the training step, in a background thread.

:class:`BatchPrefetcher` wraps a :class:`~sepray.data.sampler.CropSampler`: a daemon thread draws the next
batches (crop sampling and augmentation: source gains, remix, pitch shift) into a queue of ``depth`` while the
step trains on the current one, and pins them in page-locked memory when they go to a GPU (``pin_memory``), so
that the copy to the device can be non-blocking.

Determinism: the thread is the only user of the sampler's generator and draws in the order the step would, so
the batches are the same, in the same order, as drawing each one in the step (``depth=0``).

Sampler state: the thread runs ahead, so the sampler's generator is up to ``depth + 1`` batches past what
training has used. Each batch carries the sampler state right after it was drawn; :meth:`state_dict` is the
state after the last batch the caller *took*. A checkpoint therefore resumes at the first batch not trained on;
what was drawn ahead and never taken is drawn again after the resume (:meth:`load_state_dict` drops it).
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from sepray.data.sampler import CropSampler

# mix (B, C, T_in), target (B, S, C, T_out), domains (B,) or None
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
PUT_POLL_S = 0.1  # how often a thread blocked on a full queue looks whether it was told to stop


@dataclass(frozen=True)
class _Drawn:
    batch: Batch
    state: dict[str, Any]  # the sampler's state_dict() right after drawing this batch


class _Done:
    """What the thread puts after its last batch (it drew as many as it was allowed)."""


class BatchPrefetcher:
    """``sampler.labelled_batch(batch_size)`` drawn up to ``depth`` batches ahead (``depth=0``: in :meth:`next`).

    ``wait_seconds`` sums the time :meth:`next` spent waiting for a batch (with ``depth=0``: drawing it), i.e.
    the time the training step waited on data.
    """

    def __init__(
        self,
        sampler: CropSampler,
        batch_size: int,
        depth: int = 2,
        pin_memory: bool = False,
        device: torch.device | None = None,
    ):
        if depth < 0:
            raise ValueError(f"BatchPrefetcher: depth must be >= 0, got {depth}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.depth = int(depth)
        self.pin_memory = bool(pin_memory)
        # the CUDA device the batches go to: the pinning thread makes it current (as DataLoader's does)
        self.device = device
        self.wait_seconds = 0.0
        self._state = sampler.state_dict()  # after the last batch taken
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None

    def next(self, remaining: int | None = None) -> Batch:
        """The next batch: mix (B, C, T_in), target (B, S, C, T_out), domains (B,) int64 or None.

        ``remaining``: how many batches the caller will take at most from here on, this one included; a thread
        started now draws no more than that (None: no limit). Taking more is allowed: a new thread starts.
        """
        start = time.perf_counter()
        if self.depth == 0:
            batch = _pinned(self.sampler.labelled_batch(self.batch_size), self.pin_memory)
            self._state = self.sampler.state_dict()
        else:
            while True:
                if self._thread is None:
                    self._start(remaining)
                item = self._queue.get()
                if isinstance(item, _Done):  # every batch it drew was taken: the sampler is where we are
                    self._join()
                    continue
                if isinstance(item, BaseException):
                    self.close()  # the failed batch is drawn again by the next call
                    raise item
                batch, self._state = item.batch, item.state
                break
        self.wait_seconds += time.perf_counter() - start
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state after the last batch taken (plain tensors and ints)."""
        return self._state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Drop what was drawn ahead and continue from ``state`` (a :meth:`state_dict`)."""
        self.close()
        self.sampler.load_state_dict(state)
        self._state = self.sampler.state_dict()

    def close(self) -> None:
        """Stop the thread and drop the batches drawn ahead: the sampler goes back to the state after the last
        batch taken, so the next :meth:`next` gives the batch that follows it."""
        if self._thread is None:
            return
        self._stop.set()
        self._join()
        self.sampler.load_state_dict(self._state)

    def _start(self, remaining: int | None) -> None:
        self._queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        args = (
            self.sampler,
            self.batch_size,
            remaining,
            self.pin_memory,
            self.device,
            self._queue,
            self._stop,
        )
        self._thread = threading.Thread(target=_draw, args=args, name="sepray-batches", daemon=True)
        # a prefetcher dropped without close() (a trial that ended early) stops its thread
        weakref.finalize(self, self._stop.set)
        self._thread.start()

    def _join(self) -> None:
        """Wait for the thread to end (draining the queue so that it is not blocked on it), then forget it."""
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=PUT_POLL_S)
            except queue.Empty:
                pass
        self._thread.join()
        self._thread = self._queue = self._stop = None


def _pinned(batch: Batch, pin: bool) -> Batch:
    if not pin:
        return batch
    return tuple(None if t is None else t.pin_memory() for t in batch)  # type: ignore[return-value]


def _draw(
    sampler: CropSampler,
    batch_size: int,
    limit: int | None,
    pin: bool,
    device: torch.device | None,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    """The thread: draw batches (at most ``limit``) into ``out`` until ``stop``; an error goes to ``out`` too."""
    try:
        if pin and device is not None and device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)  # pinned buffers belong with the device the step copies them to
        drawn = 0
        while limit is None or drawn < limit:
            batch = _pinned(sampler.labelled_batch(batch_size), pin)
            if not _put(out, _Drawn(batch, sampler.state_dict()), stop):
                return
            drawn += 1
        _put(out, _Done(), stop)
    except BaseException as exc:  # handed to the training step, which raises it
        _put(out, exc, stop)


def _put(out: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` when there is room; False when told to stop first."""
    while not stop.is_set():
        try:
            out.put(item, timeout=PUT_POLL_S)
            return True
        except queue.Full:
            continue
    return False
