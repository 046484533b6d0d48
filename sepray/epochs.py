"""The one epoch loop: ``sepray train`` (:mod:`sepray.train_run`) and every sweep trial (:mod:`sepray.sweep.trial`)
train a :class:`sepray.train.Trainer` with :func:`run_epochs`.

The loop does what both do alike, in this order each epoch: ask whether someone else ended the run; train an
epoch and validate it; ask again; log the epoch's result; write the checkpoint; finish the run once training is
finished (``train.epochs`` trained, or ``train.max_seconds`` ran out: ``trainer.cut_by_time``) -- before the
epoch's report, because code after a sweep trial's last report may never run; report the epoch. However it
ends (finished, stopped, an error, Ctrl-C / SIGTERM), the trainer's batch prefetch thread is stopped.

What differs is the caller's :class:`EpochHooks`: where the metrics go, which folder holds the checkpoint
(``runs/<run id>/``, or a temporary folder Tune copies), how a run is finished and an epoch reported (a progress
line; Tune's report), whether the run was ended by someone else (the sweep driver, for ASHA or the sweep's time
limit), and what an error does to the run. Nothing here knows MLflow or Ray.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepray import names

STOPPED = "stopped"  # EpochHooks.should_stop ended the loop (whoever stopped it closes the run)


@dataclass(frozen=True)
class EpochsEnd:
    """How :func:`run_epochs` ended: ``outcome`` is :data:`names.FINISHED`, :data:`names.CUT_BY_TIME`,
    :data:`STOPPED`, or :data:`names.FAILED` (an error that :meth:`EpochHooks.on_error` took); ``result`` is the
    last epoch's result (empty when no epoch ran)."""

    outcome: str
    result: dict[str, float] = field(default_factory=dict)


class EpochHooks:
    """What a caller of :func:`run_epochs` does around its epochs. Every method but :meth:`checkpoint_dir` does
    nothing by default; override what you need."""

    def on_step(self, step: int, loss: float) -> None:
        """After every optimizer step: its number (from 1, over the whole run) and its loss."""

    def should_stop(self, trainer) -> bool:
        """Asked before each epoch and after each epoch's validation: True ends the loop at once, nothing more
        logged, saved or reported (outcome :data:`STOPPED`)."""
        return False

    def on_epoch(self, result: dict[str, float], trainer) -> None:
        """Log an epoch's ``result``. It runs before the checkpoint is written: a process killed between the two
        trains that epoch again after a resume, rather than losing its metrics."""

    def checkpoint_dir(self, trainer) -> AbstractContextManager[Path]:
        """The folder this epoch's checkpoint is written into, held until the epoch's :meth:`report` returned."""
        raise NotImplementedError

    def on_finish(self, result: dict[str, float], trainer) -> None:
        """Once, when training is finished (``trainer.cut_by_time`` says whether ``train.max_seconds`` cut it):
        after the last epoch's checkpoint and before its :meth:`report`, or at once for a trainer that was
        finished already (a resumed run that had trained all its epochs)."""

    def report(self, result: dict[str, float], trainer, checkpoint_dir: Path) -> None:
        """Last of each epoch: say that it is done, with the folder that holds its checkpoint."""

    def on_error(self, exc: BaseException, trainer) -> bool:
        """An exception ended the loop (Ctrl-C and SIGTERM are KeyboardInterrupt): True when this took care of it
        (the loop returns outcome :data:`names.FAILED`), False to raise it."""
        return False


def fixed_dir(directory: Path) -> AbstractContextManager[Path]:
    """A :meth:`EpochHooks.checkpoint_dir` that is the same folder every epoch."""
    return nullcontext(directory)


def train_and_validate(trainer, on_step=None) -> dict[str, Any]:
    """One epoch of ``trainer``: its training metrics, its validation metrics, the epoch and the training seconds
    so far (:data:`names.EPOCH`, :data:`names.TRAIN_SECONDS_METRIC`)."""
    result = {**trainer.train_epoch(on_step), **trainer.validate(), names.EPOCH: trainer.epoch}
    result[names.TRAIN_SECONDS_METRIC] = trainer.train_seconds
    return result


def finished_outcome(trainer) -> str:
    """:data:`names.CUT_BY_TIME` when ``train.max_seconds`` ended training before ``train.epochs``, else
    :data:`names.FINISHED`."""
    return names.CUT_BY_TIME if trainer.cut_by_time else names.FINISHED


def run_epochs(trainer, hooks: EpochHooks) -> EpochsEnd:
    """Train ``trainer`` epoch by epoch until it has finished or ``hooks.should_stop``; see the module text."""
    result: dict[str, Any] = {}
    try:
        if trainer.finished:  # resumed from the checkpoint of its last epoch: nothing left to train
            hooks.on_finish(result, trainer)
            return EpochsEnd(finished_outcome(trainer), result)
        while not trainer.finished:
            if hooks.should_stop(trainer):
                return EpochsEnd(STOPPED, result)
            result = train_and_validate(trainer, hooks.on_step)
            if hooks.should_stop(trainer):
                return EpochsEnd(STOPPED, result)
            hooks.on_epoch(result, trainer)
            with hooks.checkpoint_dir(trainer) as directory:
                trainer.save_checkpoint(directory)
                if trainer.finished:
                    hooks.on_finish(result, trainer)
                hooks.report(result, trainer, Path(directory))
        return EpochsEnd(finished_outcome(trainer), result)
    except BaseException as exc:
        if hooks.on_error(exc, trainer):
            return EpochsEnd(names.FAILED, result)
        raise
    finally:
        trainer.close()  # the batch prefetch thread ends with the loop, however it ends
