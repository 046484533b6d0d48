"""Trials cut by the sweep's time limit keep the model of their last completed epoch (ray-free).

When ``budget.sweep_seconds`` runs out, Tune stops every running trial where it stands; no code of the trial
runs after that. The driver then calls :func:`keep_cut_model` for each such trial with a local copy of the
trial's latest Tune checkpoint (``checkpoint.pt`` + ``run_config.json`` + the trial file naming its MLflow run,
written after every epoch; :mod:`sepray.sweep.raytune.tuner` fetches it with Tune's Checkpoint API, so remote
storage works too). Its child run gets what a finished trial logs -- the model package, ``run_config.json``,
the audio excerpt and spectrograms -- and ends FINISHED with ``sepray.outcome = cut_by_time``,
``sepray.cut_by = budget.sweep_seconds`` and ``sepray.epochs`` = the epoch of the kept model. A cut trial
without a completed epoch has no checkpoint: its run ends KILLED, ``cut_by_time`` with 0 epochs, no model.

(``budget.trial_seconds`` is the trial's own ``train.max_seconds``: the trial ends itself after the epoch that
passes it and logs its package as ``cut_by_time`` in :func:`sepray.sweep.trial.run_trial`.)
"""

from __future__ import annotations

import json
from pathlib import Path

from sepray import names, tracking
from sepray.sweep.trial import TRIAL_FILE, TrialContext, finish_child_run


def keep_cut_model(sweep: TrialContext, trial_id: str, checkpoint_dir: Path | None, log=print) -> str | None:
    """Give the child run of trial ``trial_id``, cut by the sweep's time limit, the model of ``checkpoint_dir``
    (its latest checkpoint; None when it never completed an epoch). Returns the run id, or None when the trial
    has no run of its own (it replayed another trial's results, or another trial took its run over) or its
    run is FINISHED already (it completed its budget just before the cut, or this was done before a
    ``--resume``)."""
    run_id = None
    if checkpoint_dir is not None and (checkpoint_dir / TRIAL_FILE).is_file():
        run_id = json.loads((checkpoint_dir / TRIAL_FILE).read_text()).get("run_id")
    if run_id is None:
        runs = tracking.child_runs(sweep.experiment, sweep.parent_run_id, sweep.uri, trial_id=trial_id)
        run_id = runs[0].info.run_id if runs else None
    if run_id is None:
        return None
    run = tracking.Run(run_id, sweep.uri)
    info = run.info()
    if info.info.status == "FINISHED" or info.data.tags.get(names.TRIAL_ID) != trial_id:
        return None  # finished already, or another trial took the run over (after a --resume)
    trainer = _trainer_at(checkpoint_dir) if checkpoint_dir is not None else None
    if trainer is None:
        run.set_tags({names.OUTCOME: names.CUT_BY_TIME, names.CUT_BY: names.SWEEP_LIMIT, names.EPOCHS: 0})
        run.end("KILLED")
        log(f"trial {trial_id}: cut by the sweep's time limit before its first epoch ended; no model")
        return run_id
    finish_child_run(run, trainer, sweep, names.SWEEP_LIMIT)
    log(
        f"trial {trial_id}: cut by the sweep's time limit; run {run_id} keeps its model of epoch {trainer.epoch}"
    )
    return run_id


def _trainer_at(checkpoint_dir: Path):
    """A Trainer (on the CPU) restored from a trial checkpoint; None when the folder holds none."""
    import torch

    from sepray.config import run_config_from_dict
    from sepray.device import torch_threads
    from sepray.train import CHECKPOINT_FILE, Trainer

    if not (checkpoint_dir / CHECKPOINT_FILE).is_file() or not (checkpoint_dir / names.RUN_CONFIG).is_file():
        return None
    cfg = run_config_from_dict(
        json.loads((checkpoint_dir / names.RUN_CONFIG).read_text()), str(checkpoint_dir)
    )
    with torch_threads(torch.get_num_threads()):  # the trial's train.threads must not stay set in the driver
        trainer = Trainer(cfg, device="cpu")  # the driver may have no GPU; the package is device-free
    trainer.load_checkpoint(checkpoint_dir)
    return trainer
