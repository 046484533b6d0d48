"""The one base class of user errors (bad input, a missing file, an unreachable service).

The CLI turns a :class:`UserError` into one line ``sepray: error: <message>`` and exit code 2; any other
exception is a bug and shows its traceback. Every subclass also derives from the builtin exception it stands
for (``ValueError``, ``FileNotFoundError``, ...), so library callers can catch either. Imports nothing.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave; the message is one line naming the file, key or value."""


class UsageError(UserError, ValueError):
    """A bad argument or value (a CLI option, a split name, a device)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a run needs) does not exist."""


class UserPathError(UserError, OSError):
    """An OSError on a path the user gave (exists, is a directory, not writable ...), as one line."""


class NoSpaceError(UserPathError):
    """A write that ran out of disk space (or quota); the one line names the path and says "no space left"."""


class SweepError(UserError, RuntimeError):
    """A sweep that cannot start, resume or be scheduled; one line."""


class ExportError(UserError, ValueError):
    """A model that cannot be exported as a graph, or an exported graph that cannot be used; one line."""


def error_text(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 500 characters (the ``sepray.last_error`` tag of a run)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]
