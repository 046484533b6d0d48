"""CUDA paths: training with mixed precision, checkpoint round trip, batches drawn ahead into pinned memory, and
inference on the GPU.

Skipped with an explicit reason on machines without CUDA (CI); `python benchmarks/gpu_check.py` runs them (every
test marked `gpu`) whenever a GPU is available.
"""

from __future__ import annotations

import pytest
import torch

from sepray.config import load_config
from sepray.device import resolve_device
from sepray.separate import run_chunked
from sepray.train import Trainer
from tests.conftest import requires_cuda

pytestmark = pytest.mark.gpu


def test_auto_device_matches_the_machine():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@requires_cuda
@pytest.mark.parametrize("preset", ["unittest", "wavenet-small"])
def test_cuda_training_with_amp_and_resume(preset, tmp_path):
    overrides = ["train.epochs=1", "train.steps_per_epoch=3", "train.batch_size=2", "train.device=cuda"]
    if preset == "wavenet-small":
        overrides += ["data.synth_songs=4", "data.synth_seconds=4", "model.blocks=1", "train.valid_crops=2"]
    cfg = load_config(preset, overrides)
    trainer = Trainer(cfg)
    assert trainer.device.type == "cuda" and trainer.use_amp
    metrics = trainer.train_epoch()
    assert metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN
    assert next(trainer.model.parameters()).is_cuda
    valid = trainer.validate()
    assert "valid_sdr" in valid
    trainer.save_checkpoint(tmp_path)
    again = Trainer(cfg)
    again.load_checkpoint(tmp_path)
    assert again.step == trainer.step
    for a, b in zip(again.model.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(a, b)


@requires_cuda
def test_cuda_batches_drawn_ahead_are_pinned_and_train_like_batches_drawn_in_the_step():
    losses = []
    for depth in (0, 2):
        cfg = load_config(
            "unittest", ["train.steps_per_epoch=4", f"train.prefetch_batches={depth}", "train.amp=false"]
        )
        trainer = Trainer(cfg, device="cuda")
        assert trainer.batches.pin_memory
        losses.append(trainer.train_epoch()["train_loss"])
        assert trainer.state_dict()["sampler"]["batches_drawn"] == 4
    mix, target, _ = trainer.batches.next()
    assert mix.is_pinned() and target.is_pinned()
    # the same batches (GPU kernels may sum in other orders)
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)


@requires_cuda
def test_cuda_inference_matches_cpu():
    cfg = load_config("unittest")
    trainer = Trainer(cfg, device="cpu")
    mix = torch.randn(1, 1, 5000) * 0.3
    cpu = run_chunked(trainer.model, mix, chunk=1000)
    gpu = run_chunked(trainer.model.to("cuda"), mix, chunk=1000, device="cuda")
    assert torch.allclose(cpu, gpu, atol=1e-4)


def test_one_device_trains_without_a_data_parallel_wrapper():
    trainer = Trainer(load_config("unittest"), device="cpu")
    assert trainer.net is trainer.model and trainer.devices == []


@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason=f"{torch.cuda.device_count()} CUDA device(s) visible: the multi-GPU trial path needs 2 or more",
)
def test_multi_gpu_trial_splits_each_batch_across_the_visible_gpus(tmp_path):
    cfg = load_config("unittest", ["train.epochs=1", "train.steps_per_epoch=2", "train.device=cuda"])
    trainer = Trainer(cfg)
    assert isinstance(trainer.net, torch.nn.DataParallel)
    assert trainer.devices == list(range(torch.cuda.device_count()))
    metrics = trainer.train_epoch()
    assert metrics["train_loss"] == metrics["train_loss"]
    trainer.save_checkpoint(tmp_path)  # the plain model's weights, no "module." prefix
    single = Trainer(load_config("unittest", ["train.device=cuda:0"]))
    single.load_checkpoint(tmp_path)
    assert single.net is single.model
    for a, b in zip(single.model.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(a, b)
