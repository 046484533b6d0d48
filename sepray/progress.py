"""The progress bar of ``sepray separate``: chunks for one-pass models, samples for generating models.

A model that generates sample by sample (``Separator.sequential_steps > 0``, the autoregressive UMT) runs for
minutes per song on a CPU; its bar counts the generated samples (each model call generates ``steps`` of them
one after another, ``model.step_progress`` reports them), so tqdm's time left is meaningful.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm

from sepray.models.base import Separator


@contextlib.contextmanager
def separation_progress(
    model: Separator, chunks: int, chunk: int, desc: str, enabled: bool = True
) -> Iterator[Callable[[int], None] | None]:
    """A bar for ``chunks`` model calls of ``chunk`` output samples; yields the per-call callback (None when
    the model reports its own steps)."""
    steps = model.sequential_steps(model.output_length(model.input_length(chunk)))
    unit = "sample" if steps else "chunk"
    bar = tqdm(total=chunks * max(steps, 1), desc=desc, unit=unit, file=sys.stderr, disable=not enabled)
    model.step_progress = bar.update if steps else None
    try:
        yield None if steps else bar.update
    finally:
        model.step_progress = None
        bar.close()
