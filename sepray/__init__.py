"""sepray: find the best music source separator by sweeping architectures on Ray."""

__version__ = "0.1.0"

SOURCES = ("vocals", "accompaniment")
