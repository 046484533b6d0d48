"""A full disk under a sweep stops it at once, with one line naming what is full.

A trial whose checkpoint cannot be saved because the sweep's Ray storage is full, or whose tracking calls fail
because the MLflow store is full, fails the same way on each of Ray's retries (``max_failures``), and so does
every trial after it: on the quickstart's smoke sweep that was 3.5 minutes of retries, then a traceback from
Tune reading back an error file the full disk had cut off. Instead :class:`StorageWatch` stops the sweep at the
first such failure: the driver ends the parent run FAILED with the reason (when the MLflow store can still take
it) and prints it as one line; the sweep continues with ``--resume`` once there is space. Also here: reading a
trial's error from the driver's own copy (the one in a full storage may be empty).
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

from ray.tune import Callback

from sepray.errors import SweepError

STORAGE_FULL = "the sweep's Ray storage is full"  # the message of StorageFullError, recognised by the driver
FULL_MARKERS = ("no space left on device", "disk quota exceeded", "database or disk is full", " is full")
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*): (.*)$")


class StorageFullError(OSError):
    """A trial's checkpoint could not be saved: the sweep's Ray storage is full (raised in the trial)."""


def check_storage_error(exc: OSError, epoch) -> None:
    """Raise :class:`StorageFullError` for a full disk met while saving a trial's checkpoint to the storage."""
    if exc.errno in FULL_ERRNOS or "no space left on device" in str(exc).lower():
        raise StorageFullError(
            f"{STORAGE_FULL}: the checkpoint of epoch {epoch} was not saved ({exc.strerror or exc})"
        ) from exc


def trial_error_text(trial) -> str:
    """A trial's latest error as text: the driver's local copy of its error file (Tune appends each failure),
    else the copy in the storage (which a full disk may have left empty)."""
    local = getattr(trial, "error_file", None)
    try:
        if local and Path(local).is_file():
            text = Path(local).read_text(errors="replace")
            return text.rsplit("Failure # ", 1)[-1]
    except OSError:
        pass
    try:
        error = trial.get_error()
    except Exception:
        return ""
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}" if error else ""


def error_line(text: str) -> str:
    """The exception's own line of a traceback text, as ``Type: message`` (the type without its module)."""
    for line in reversed(text.splitlines()):
        match = _EXCEPTION_LINE.match(line.rstrip())
        if match and match.group(1) != "Traceback":
            return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2)}"[:500]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def full_reason(text: str, storage: str, trial_id: str) -> str | None:
    """One line on what is full when a trial's error ``text`` says a disk is full; else None."""
    if not any(marker in text.lower() for marker in FULL_MARKERS):
        return None
    then = "free space there, then continue the sweep with the same command and --resume"
    line = error_line(text)
    if STORAGE_FULL in text:
        detail = line.split(f"{STORAGE_FULL}: ", 1)[-1]
        return f"the sweep's Ray storage {storage} is full: trial {trial_id}: {detail}; {then}"
    message = line.split(": ", 1)[-1]
    if message.startswith("the MLflow"):  # sepray.tracking names the full store (TrackingError)
        return f"{message}: trial {trial_id} could not log to it; {then}"
    return f"a disk is full under trial {trial_id} ({line}); {then}"


class StorageWatch(Callback):
    """Stops the sweep at the first trial failure caused by a full disk (picklable); the driver reports it."""

    def __init__(self, storage: str):
        self.storage = storage
        self._reason: str | None = None

    def _check(self, trial) -> None:
        if self._reason is None:
            self._reason = full_reason(trial_error_text(trial), self.storage, trial.trial_id)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check(trial)

    def on_step_end(self, iteration, trials, **info):
        if self._reason is not None:
            raise SweepError(self._reason)

    def __getstate__(self):
        return {"storage": self.storage, "_reason": None}
