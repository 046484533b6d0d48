"""``sepray train``: one training run, tracked in MLflow, checkpointed every epoch, resumable.

:func:`train_run` drives a :class:`sepray.train.Trainer`, logs what it returns into an MLflow run and writes a
checkpoint into ``checkpoint_root/<run id>/`` after every epoch (:mod:`sepray.checkpoint`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sepray import names
from sepray.checkpoint import (
    CHECKPOINT_FILE,
    LOCK_FILE,
    RUN_CONFIG_FILE,
    read_checkpoint,
    read_checkpoint_config,
)
from sepray.config import RunConfig
from sepray.errors import MissingFileError, UsageError, error_text
from sepray.locks import held_lock
from sepray.train import Trainer, log_package


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
    it reopens the run; a FINISHED run is left as it is. Failures end it FAILED (``sepray.last_error``).
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
            run.log_params({**cfg.flat(), "num_parameters": trainer.num_parameters})
            run.log_dict(cfg.to_dict(), RUN_CONFIG_FILE)
            run.log_metrics(trainer.baseline_sdr(), step=0)
        except BaseException as exc:
            _end(run, exc)
            raise
        return _train_epochs(run, trainer, ckpt_dir, log)


def _train_epochs(run, trainer: Trainer, ckpt_dir: Path, log) -> TrainResult:
    """Train ``trainer`` until it has finished, logging into ``run``; end the run FINISHED, KILLED or FAILED."""
    cfg = trainer.cfg
    log(
        f"run {run.run_id}: {cfg.model_name} with {trainer.num_parameters:,} parameters; checkpoints in {ckpt_dir}"
    )
    log_every = max(1, cfg.train.steps_per_epoch // 10)

    def on_step(step: int, loss: float) -> None:
        if step % log_every == 0:
            run.log_metrics({"train_loss_step": loss}, step=step)

    result: dict[str, float] = {}
    try:
        while not trainer.finished:
            epoch_metrics = trainer.train_epoch(on_step)
            result = {**epoch_metrics, **trainer.validate(), "epoch": trainer.epoch}
            run.log_metrics({**result, "train_seconds": trainer.train_seconds}, step=trainer.epoch)
            trainer.save_checkpoint(ckpt_dir)
            log(
                f"epoch {trainer.epoch}/{cfg.train.epochs}: loss {result['train_loss']:.4f}  "
                f"valid SDR {result['valid_sdr']:.2f} dB  ({result['steps_per_second']:.1f} steps/s)"
            )
        log_package(run, trainer)
        run.end("FINISHED")
    except BaseException as exc:
        _end(run, exc)
        raise
    return TrainResult(run.run_id, ckpt_dir, result)


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
