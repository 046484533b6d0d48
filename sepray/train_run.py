"""``sepray train``: one training run, tracked in MLflow, checkpointed every epoch, resumable.

:func:`train_run` drives a :class:`sepray.train.Trainer` with the one epoch loop (:func:`sepray.epochs.run_epochs`),
logs what it returns into an MLflow run and writes a checkpoint into ``checkpoint_root/<run id>/`` after every
epoch (:mod:`sepray.checkpoint`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sepray import names
from sepray.checkpoint import CHECKPOINT_FILE, LOCK_FILE, read_checkpoint, read_checkpoint_config
from sepray.config import RunConfig
from sepray.epochs import EpochHooks, fixed_dir, run_epochs
from sepray.errors import MissingFileError, UsageError, error_text
from sepray.locks import held_lock
from sepray.train import Trainer, end_trained_run, log_package


@dataclass
class TrainResult:
    run_id: str
    checkpoint_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)


def train_run(
    cfg: RunConfig | None,
    experiment: str = "sepray",
    run_name: str | None = None,
    checkpoint_root: str | os.PathLike = "runs",
    resume_run_id: str | None = None,
    uri: str | None = None,
    log=print,
) -> TrainResult:
    """Train with MLflow logging and a checkpoint after every epoch; ``resume_run_id`` continues that run.

    Checkpoints live in ``checkpoint_root/<run_id>/``. Params are the flattened resolved config; metrics are
    ``train_loss`` (every few steps), validation SDR per epoch; at the end the model package is logged. One
    process trains a run at a time (a lock file). A resume checks the checkpoint, its config and the run before
    it reopens the run; a FINISHED run is left as it is. Failures end it FAILED (``sepray.last_error``). A finished
    run is tagged like a sweep trial: ``sepray.outcome`` ``finished``, or ``cut_by_time`` when ``train.max_seconds``
    ended it (``sepray.cut_by`` = ``train.max_seconds``), and ``sepray.epochs``.
    """
    from sepray import tracking

    uri = tracking.check("create", uri)  # a store that cannot be used is said before any work
    if resume_run_id is not None:
        ckpt_dir = Path(checkpoint_root) / resume_run_id
        if not (ckpt_dir / CHECKPOINT_FILE).is_file():
            raise MissingFileError(f"{ckpt_dir / CHECKPOINT_FILE}: no checkpoint for run {resume_run_id}")
        saved = read_checkpoint_config(ckpt_dir)
        if cfg is not None and cfg.signature() != saved.signature():
            raise UsageError(f"run {resume_run_id}: its checkpoint was trained with a different config")
        cfg, state = saved, read_checkpoint(ckpt_dir)
        previous = tracking.get_run(resume_run_id, uri)
        if previous.info.status == "FINISHED":
            log(
                f"run {resume_run_id} has finished ({state['epoch']} epochs): nothing to resume; left as it is"
            )
            return TrainResult(resume_run_id, ckpt_dir, dict(previous.data.metrics))
        with held_lock(ckpt_dir / LOCK_FILE, f"run {resume_run_id}", "; resume it once that process ended"):
            trainer = Trainer(cfg)
            trainer.load_checkpoint(ckpt_dir, state)
            run = tracking.attach_run(resume_run_id, uri, reopen=True)
            log(f"resuming run {resume_run_id} at epoch {trainer.epoch}")
            return _train_epochs(run, trainer, ckpt_dir, log)
    assert cfg is not None
    trainer = Trainer(cfg)
    run = tracking.start_run(
        experiment,
        run_name=run_name or f"{cfg.model_name}-{cfg.signature()}",
        tags={names.MODEL: cfg.model_name, names.SIGNATURE: cfg.signature(), names.KIND: "train"},
        uri=uri,
    )
    ckpt_dir = Path(checkpoint_root) / run.run_id
    with held_lock(ckpt_dir / LOCK_FILE, f"run {run.run_id}"):
        try:
            run.log_params({**cfg.flat(), names.NUM_PARAMETERS_PARAM: trainer.num_parameters})
            run.log_dict(cfg.to_dict(), names.RUN_CONFIG)
            run.log_metrics(trainer.baseline_sdr(), step=0)
        except BaseException as exc:
            _end(run, exc)
            raise
        return _train_epochs(run, trainer, ckpt_dir, log)


class _TrainHooks(EpochHooks):
    """``sepray train``'s side of the epoch loop: metrics into its MLflow run, the checkpoint in ``runs/<run id>/``,
    a progress line per epoch; the run ends FINISHED (outcome ``finished`` or ``cut_by_time``), KILLED or FAILED."""

    def __init__(self, run, ckpt_dir: Path, cfg: RunConfig, log):
        self.run, self.ckpt_dir, self.cfg, self.log = run, ckpt_dir, cfg, log
        self.log_every = max(1, cfg.train.steps_per_epoch // 10)
        self.ended = False  # the run is FINISHED: nothing after that may end it otherwise

    def on_step(self, step: int, loss: float) -> None:
        if step % self.log_every == 0:
            self.run.log_metrics({names.TRAIN_LOSS_STEP: loss}, step=step)

    def on_epoch(self, result, trainer: Trainer) -> None:
        self.run.log_metrics(result, step=trainer.epoch)

    def checkpoint_dir(self, trainer: Trainer):
        return fixed_dir(self.ckpt_dir)

    def on_finish(self, result, trainer: Trainer) -> None:
        log_package(self.run, trainer)
        end_trained_run(self.run, trainer, names.TRAIN_LIMIT if trainer.cut_by_time else None)
        self.ended = True

    def report(self, result, trainer: Trainer, checkpoint_dir: Path) -> None:
        self.log(
            f"epoch {trainer.epoch}/{self.cfg.train.epochs}: loss {result[names.TRAIN_LOSS]:.4f}  "
            f"valid SDR {result[names.sdr_metric('valid')]:.2f} dB  "
            f"({result[names.STEPS_PER_SECOND]:.1f} steps/s)"
        )
        if trainer.cut_by_time:
            self.log(
                f"run {self.run.run_id}: {names.TRAIN_LIMIT}={self.cfg.train.max_seconds:g} ran out after epoch "
                f"{trainer.epoch} of {self.cfg.train.epochs}; its model is that epoch's ({names.CUT_BY_TIME})"
            )

    def on_error(self, exc: BaseException, trainer: Trainer) -> bool:
        if not self.ended:
            _end(self.run, exc)
        return False


def _train_epochs(run, trainer: Trainer, ckpt_dir: Path, log) -> TrainResult:
    """Train ``trainer`` until it has finished, logging into ``run``; end the run FINISHED, KILLED or FAILED."""
    log(
        f"run {run.run_id}: {trainer.cfg.model_name} with {trainer.num_parameters:,} parameters; "
        f"checkpoints in {ckpt_dir}"
    )
    end = run_epochs(trainer, _TrainHooks(run, ckpt_dir, trainer.cfg, log))
    return TrainResult(run.run_id, ckpt_dir, end.result)


def _end(run, exc: BaseException) -> None:
    """End a run ``exc`` stopped: KILLED (Ctrl-C, SIGTERM) or FAILED with its reason. Never raises."""
    try:
        if isinstance(exc, KeyboardInterrupt):
            run.end("KILLED")
        else:
            run.set_tags({names.LAST_ERROR: error_text(exc)})
            run.end("FAILED")
    except Exception as closing:
        print(f"sepray: could not close run {run.run_id}: {error_text(closing)}", file=sys.stderr)
