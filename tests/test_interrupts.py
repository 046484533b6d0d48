"""Ctrl-C / SIGTERM held during a store write and raised right after it (real signals sent to this process)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from sepray.interrupts import Terminated, deferred, sigterm_as_interrupt


def test_ctrl_c_inside_a_held_block_is_raised_when_it_ends():
    done = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the write finished")
    assert done == ["the write finished"]
    assert signal.getsignal(signal.SIGINT) == before  # the handler is back


def test_sigterm_inside_a_held_block_ends_the_command_as_terminated():
    done = []
    before = signal.getsignal(signal.SIGTERM)  # another test in this process may have set one (ray.init does)
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            with deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("the write finished")
    assert done == ["the write finished"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_held_block_outside_the_main_thread_changes_no_handler():
    seen = []
    before = signal.getsignal(signal.SIGINT)

    def work():
        with deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [before]
