"""A training run's checkpoint folder (``runs/<run id>/``): the files, and reading them back with one-line
errors (a damaged, foreign or incomplete checkpoint is a :class:`CheckpointError` naming the file), so that a
resume can check everything before it touches the run. The Trainer (sepray.train) writes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from sepray import names
from sepray.config import RunConfig, run_config_from_dict
from sepray.errors import MissingFileError, UserError

CHECKPOINT_FILE = "checkpoint.pt"  # beside it: the resolved run config, names.RUN_CONFIG
LOCK_FILE = ".sepray-lock"  # in a run's checkpoint folder while a process trains it


class CheckpointError(UserError, ValueError):
    """A checkpoint folder that cannot be resumed from (damaged, foreign, incomplete); names the file."""


def read_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    """The training state in ``directory/checkpoint.pt`` (plain tensors, ``weights_only``); CheckpointError."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise MissingFileError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, foreign pickles: unpickling errors of every kind
        raise CheckpointError(
            f"{path}: not a readable sepray checkpoint (damaged, cut off or not written by sepray: "
            f"torch.load raised {type(exc).__name__}); the run is left as it is"
        ) from None
    missing = [
        k for k in ("model", "optimizer", "epoch", "step") if not isinstance(state, dict) or k not in state
    ]
    if missing:
        raise CheckpointError(f"{path}: not a sepray checkpoint (no {missing[0]!r})")
    return state


def read_checkpoint_config(directory: str | os.PathLike) -> RunConfig:
    """The resolved run config saved beside a checkpoint (``run_config.json``); one-line errors naming it."""
    path = Path(directory) / names.RUN_CONFIG
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise MissingFileError(f"{path}: missing; the checkpoint folder is incomplete") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a valid run config ({str(exc).splitlines()[0]})") from None
    return run_config_from_dict(raw, str(path))
