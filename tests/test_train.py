"""The training loop on CPU: a checkpoint round trip resumes exactly (same next step, same weights)."""

from __future__ import annotations

import torch

from sepray.config import load_config
from sepray.train import CHECKPOINT_FILE, Trainer


def test_checkpoint_round_trip_gives_an_identical_next_epoch(tmp_path):
    cfg = load_config("unittest", ["train.epochs=3"])
    first = Trainer(cfg, device="cpu")
    first.train_epoch()
    first.save_checkpoint(tmp_path)
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # written atomically

    resumed = Trainer(cfg, splits=first.splits, device="cpu")
    resumed.load_checkpoint(tmp_path)
    assert (resumed.epoch, resumed.step) == (first.epoch, first.step)
    expected, got = first.train_epoch(), resumed.train_epoch()
    assert got["train_loss"] == expected["train_loss"] and got["lr"] == expected["lr"]
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert resumed.validate() == first.validate()
