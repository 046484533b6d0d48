"""Batches drawn ahead in a thread (sepray/data/prefetch.py): the same batches in the same order as drawing each
in the step, a state that resumes at the first batch not taken, no drawing past the run's last batch, errors
raised in the step, a dropped prefetcher's thread stopped; and the Trainer that uses it."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import torch

from sepray.config import AugmentConfig, load_config
from sepray.data import CropSampler, Song
from sepray.data.prefetch import BatchPrefetcher
from sepray.train import Trainer

SR = 8000
# gains, remix and a real pitch shift (half of the crops): the augmentation the thread runs ahead
AUG = AugmentConfig(
    gain_min=0.5, gain_max=1.0, pitch_shift_prob=0.5, pitch_min_seconds=0.05, pitch_max_seconds=0.1
)


def songs() -> list[Song]:
    out = []
    for i, length in enumerate((3000, 5000, 4000)):
        g = torch.Generator().manual_seed(i)
        vocals, accompaniment = (0.3 * torch.randn(1, length, generator=g) for _ in range(2))
        out.append(
            Song(f"s{i}", vocals + accompaniment, {"vocals": vocals, "accompaniment": accompaniment}, {})
        )
    return out


def sampler(seed: int = 5) -> CropSampler:
    return CropSampler(songs(), 1200, 1000, ("vocals", "accompaniment"), AUG, SR, seed, domains=[0, 1, 1])


def same(a, b) -> bool:
    return all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_the_same_batches_in_the_same_order_as_drawing_in_the_step(depth):
    direct = sampler()
    expected = [direct.labelled_batch(4) for _ in range(6)]
    ahead = BatchPrefetcher(sampler(), 4, depth)
    got = [ahead.next() for _ in range(6)]
    assert all(same(a, b) for a, b in zip(expected, got, strict=True))
    assert got[0][2] is not None  # domain labels travel with their crops
    ahead.close()


def test_the_state_is_after_the_last_batch_taken_not_the_ones_drawn_ahead(tmp_path):
    ahead = BatchPrefetcher(sampler(), 4, depth=3)
    for _ in range(2):
        ahead.next()
    deadline = time.time() + 30
    while ahead.sampler.batches_drawn < 5 and time.time() < deadline:  # the thread filled its queue
        time.sleep(0.01)
    assert ahead.sampler.batches_drawn >= 5  # 2 taken, 3 queued (and one more may wait for room)
    state = ahead.state_dict()
    assert state["batches_drawn"] == 2
    torch.save(state, tmp_path / "state.pt")  # as a checkpoint holds it
    twin = sampler()
    for _ in range(2):
        twin.labelled_batch(4)
    assert torch.equal(state["generator"], twin.generator.get_state())

    expected = [ahead.next() for _ in range(3)]  # what training would take next
    resumed = BatchPrefetcher(sampler(seed=99), 4, depth=2)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert all(same(a, resumed.next()) for a in expected)
    # loading a state drops what was drawn ahead: back to the state after batch 2, the same next batches
    ahead.load_state_dict(state)
    assert all(same(a, ahead.next()) for a in expected)
    # closing drops the batches drawn ahead too, and the next batch is still the one after the last taken
    following = [sampler_after(5 + i) for i in range(2)]
    ahead.close()
    assert ahead.sampler.batches_drawn == 5 and same(following[0], ahead.next())
    ahead.close()
    assert same(following[1], ahead.next())
    ahead.close()
    resumed.close()


def sampler_after(batches: int):
    """The batch a fresh sampler draws after ``batches`` batches of 4."""
    direct = sampler()
    for _ in range(batches):
        direct.labelled_batch(4)
    return direct.labelled_batch(4)


def test_the_thread_draws_no_batch_past_the_last_one_the_caller_takes():
    ahead = BatchPrefetcher(sampler(), 2, depth=4)
    for i in range(3):
        ahead.next(remaining=3 - i)
    time.sleep(0.3)
    assert ahead.sampler.batches_drawn == 3  # nothing drawn ahead that no step would take
    assert ahead.state_dict()["batches_drawn"] == 3
    direct = sampler()
    for _ in range(3):
        direct.labelled_batch(2)
    assert same(direct.labelled_batch(2), ahead.next())  # taking more still works: a new thread
    ahead.close()


class Broken(CropSampler):
    def labelled_batch(self, batch_size):
        if self.batches_drawn == 1:
            raise FloatingPointError("crop 1 is broken")
        return super().labelled_batch(batch_size)


def test_an_error_while_drawing_is_raised_in_the_step():
    ahead = BatchPrefetcher(
        Broken(songs(), 1200, 1000, ("vocals", "accompaniment"), AUG, SR, 5), batch_size=2, depth=2
    )
    ahead.next()
    with pytest.raises(FloatingPointError, match="crop 1 is broken"):
        ahead.next()
    assert ahead._thread is None and ahead.sampler.batches_drawn == 1  # back after the last batch taken


def test_a_dropped_prefetcher_stops_its_thread():
    ahead = BatchPrefetcher(sampler(), 2, depth=2)
    ahead.next()
    thread = ahead._thread
    assert thread.is_alive()  # blocked on its full queue
    del ahead
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "sepray-batches"]


def test_a_trainer_trains_the_same_with_batches_drawn_ahead_or_in_the_step():
    """Two epochs with prefetch_batches 0 and 3: the same losses and weights; the checkpoint's sampler state
    is the state after the batches trained on (the thread, limited to the run's batches, drew no more)."""
    results, splits = [], None
    for depth in (0, 3):
        cfg = load_config(
            "unittest", ["train.epochs=2", "train.steps_per_epoch=2", f"train.prefetch_batches={depth}"]
        )
        trainer = Trainer(cfg, splits=splits, device="cpu")
        splits = trainer.splits
        metrics = [trainer.train_epoch() for _ in range(2)]
        assert all(0.0 <= m["data_wait_share"] <= 1.0 for m in metrics)
        state = trainer.state_dict()
        assert state["sampler"]["batches_drawn"] == trainer.step == 4
        assert trainer.sampler.batches_drawn == 4  # the last epoch's thread stopped at the run's last batch
        results.append(([m["train_loss"] for m in metrics], state))
    (loss0, state0), (loss3, state3) = results
    assert loss0 == loss3
    assert torch.equal(state0["sampler"]["generator"], state3["sampler"]["generator"])
    for name, value in state0["model"].items():
        assert torch.equal(value, state3["model"][name]), name
