"""The ``sepray`` command line's argument types and parser class: a bad value or usage is one line naming the
argument (``sepray: error: argument --chunk-seconds: must be a finite number > 0, got '-5' (see sepray separate
--help)``), exit code 2, like every other user error."""

from __future__ import annotations

import argparse
import math
import typing

EXIT_USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``sepray: error: ... (see PROG --help)``), exit 2, like every
    other user error; subcommand parsers are of this class too (``add_subparsers`` uses the parent's)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"sepray: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


def memory_size(text: str) -> int:
    """argparse type: a memory size (``2G``, ``512M``, bytes), :func:`sepray.chunk_budget.parse_memory`."""
    from sepray.chunk_budget import parse_memory

    try:
        return parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
