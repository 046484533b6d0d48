"""Ctrl-C and SIGTERM: one way to stop a command, and never in the middle of a write to the tracking store.

A KeyboardInterrupt raised inside a store write (a sqlite transaction half done) can leave the store's connection
holding its lock: the run could then not be ended KILLED and stayed RUNNING. :func:`deferred` holds both signals
for the length of such a write and raises them as soon as it is done.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C's KeyboardInterrupt is, so that a command cleans up the same way."""

    signum = signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM raises :class:`Terminated`; a second SIGTERM during
    the clean-up is ignored rather than cutting it short."""

    def terminate(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: signals are not ours to handle
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs; a signal that came meanwhile is handled, by the handler
    that was in force, when the block ends (so Ctrl-C raises KeyboardInterrupt after the write, not inside it).

    Only Python-level handlers are held (a signal ignored or left to the OS stays so). Outside the main thread
    this does nothing: Python delivers signals to the main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = {s: signal.getsignal(s) for s in HELD_SIGNALS}
    held = [s for s, handler in previous.items() if callable(handler)]
    for s in held:
        signal.signal(s, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        for s in held:
            signal.signal(s, previous[s])
        for signum in dict.fromkeys(came):
            previous[signum](signum, None)
