"""One trainer for every separator: :class:`Trainer` (an epoch at a time), and how a trained run ends.

``Trainer`` knows nothing about MLflow or Ray: the one epoch loop (:func:`sepray.epochs.run_epochs`) drives it
for ``sepray train`` (:mod:`sepray.train_run`) and for every sweep trial (:mod:`sepray.sweep.trial`), which log
what it returns and save its checkpoints. :func:`log_package` and :func:`end_trained_run` finish either's run.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepray import metrics, names
from sepray.atomic import file_written_atomically, write_text_atomically
from sepray.checkpoint import CHECKPOINT_FILE, CheckpointError, read_checkpoint
from sepray.config import RunConfig
from sepray.data import CropSampler, fixed_crops, load_splits
from sepray.data.domains import check_domains, domain_index
from sepray.data.prefetch import BatchPrefetcher
from sepray.device import resolve_device
from sepray.errors import UsageError
from sepray.losses import check_loss, separation_loss
from sepray.models import build_model
from sepray.numbers import nanmean, nanmedian
from sepray.package import save_package
from sepray.schema import ConfigError

MAX_CROP_SECONDS = 600.0  # a model whose one training crop needs more input than this is misconfigured


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def crop_sdr(reference: torch.Tensor, estimate: torch.Tensor) -> np.ndarray:
    """Utterance SDR of each crop and source. (N, S, C, T) x2 -> (N, S); NaN where the reference is silent."""
    ref = reference.detach().double().cpu().numpy()
    est = estimate.detach().double().cpu().numpy()
    out = np.stack([metrics.utterance_sdr(r, e) for r, e in zip(ref, est, strict=True)])
    silent = (np.abs(ref) < 1e-4).all(axis=(2, 3))
    out[silent] = np.nan
    return out


class Trainer:
    """Trains one model on one data config. Call :meth:`train_epoch` / :meth:`validate` in a loop."""

    def __init__(self, cfg: RunConfig, splits: dict | None = None, device: str | torch.device | None = None):
        self.cfg = cfg
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        seed_everything(tc.seed)
        self.device = resolve_device(str(device) if device is not None else tc.device)
        self.model = build_model(cfg.model_name, cfg.model).to(self.device)
        # a trial given several GPUs (resources.gpu: 2 in a sweep spec) sees them all: split each batch
        self.devices = self._devices(tc)
        self.net: torch.nn.Module = self.model
        if len(self.devices) > 1:
            self.net = torch.nn.DataParallel(self.model, device_ids=self.devices)
        check_loss(self.model.head, tc.loss)
        sr = cfg.data.sample_rate
        self.sample_rate = sr
        self.output_length = self.model.output_length(
            self.model.input_length(max(1, round(tc.segment_seconds * sr)))
        )
        self.input_length = self.model.input_length(self.output_length)
        if self.input_length > MAX_CROP_SECONDS * sr:
            raise ConfigError(
                f"model {cfg.model_name}: one training crop needs {self.input_length / sr:.3g} s of input (its "
                f"context); over {MAX_CROP_SECONDS:g} s: use fewer levels or layers"
            )
        # the test songs are the evaluator's (sepray/evaluate.py): training reads only train and valid
        self.splits = splits if splits is not None else load_splits(cfg.data, ("train", "valid"))
        if not self.splits.get("train"):
            raise UsageError("data: no training songs")
        self.sources = self.model.sources
        domains = None  # each training song's domain label, for a model whose training loss uses them
        if self.model.uses_domains:
            domains, classes = domain_index(self.splits["train"])
            check_domains(classes, self.model.config.num_domains)
        self.sampler = CropSampler(
            self.splits["train"],
            self.input_length,
            self.output_length,
            self.sources,
            cfg.data.augment,
            sr,
            tc.seed,
            domains,
            corpus_weights={c.corpus_name: c.weight for c in cfg.data.corpora()},
        )
        valid_songs = self.splits.get("valid") or self.splits["train"]
        v_out = self.model.output_length(self.model.input_length(max(1, round(tc.valid_seconds * sr))))
        self.valid_mix, self.valid_target = fixed_crops(
            valid_songs, self.model.input_length(v_out), v_out, self.sources, tc.valid_crops, tc.seed + 1
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=tc.lr_decay)
        self.use_amp = bool(tc.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        # crops and augmentation drawn ahead in a thread (the same batches), pinned for non-blocking GPU copies
        self.batches = BatchPrefetcher(
            self.sampler,
            tc.batch_size,
            tc.prefetch_batches,
            pin_memory=self.device.type == "cuda",
            device=self.device,
        )
        self.epoch = 0
        self.step = 0
        self.train_seconds = 0.0
        self.history: list[dict[str, float]] = []

    def _devices(self, tc) -> list[int]:
        """CUDA device indices that share each batch: all visible GPUs for ``cuda`` / ``auto``, else one."""
        if self.device.type != "cuda":
            return []
        if tc.multi_gpu and self.device.index is None:
            return list(range(torch.cuda.device_count()))
        return [self.device.index or 0]

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _reconstruction(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return separation_loss(self.model.head, output, target, self.cfg.train.loss)

    def _training_loss(self, mix, target, domains) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's training loss (``Separator.training_loss``; by default the separation loss of
        ``forward(mix)``) and its extra terms."""
        with torch.autocast(device_type=self.device.type, enabled=self.use_amp):
            return self.model.training_loss(mix, target, domains, self._reconstruction, self.net)

    def _validation_output(self, mix: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, enabled=self.use_amp):
            return self.model.validation_output(mix, target, self.net)

    def train_epoch(self, on_step=None) -> dict[str, float]:
        """Run ``steps_per_epoch`` optimizer steps, calling ``on_step(step, loss)`` after each. Returns
        {"train_loss", "lr", "steps_per_second", "data_wait_share"} and the epoch means of the model's extra
        terms (``train_confusion_loss``, ``train_domain_accuracy``)."""
        tc = self.cfg.train
        self.model.train()
        losses = []
        extras: dict[str, list[float]] = {}
        waited = self.batches.wait_seconds
        start = time.perf_counter()
        for i in range(tc.steps_per_epoch):
            # the batches the run still takes: the prefetch thread draws none past the last one
            left = max(tc.epochs * tc.steps_per_epoch - self.step, tc.steps_per_epoch - i)
            mix, target, domains = self.batches.next(remaining=left)
            mix = mix.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            domains = None if domains is None else domains.to(self.device, non_blocking=True)
            loss, extra = self._training_loss(mix, target, domains)
            for key, value in extra.items():
                extras.setdefault(names.TRAIN_EXTRAS[key], []).append(float(value))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged: loss is {loss.item()} at step {self.step}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            losses.append(loss.item())
            if on_step is not None:
                on_step(self.step, losses[-1])
        elapsed = time.perf_counter() - start
        self.train_seconds += elapsed
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.epoch += 1
        return {
            names.TRAIN_LOSS: float(np.mean(losses)),
            names.LR: lr,
            names.STEPS_PER_SECOND: tc.steps_per_epoch / elapsed,
            names.DATA_WAIT_SHARE: (self.batches.wait_seconds - waited) / elapsed,
            **{name: float(np.mean(values)) for name, values in extras.items()},
        }

    @torch.no_grad()
    def estimate(
        self, mix: torch.Tensor, target: torch.Tensor | None = None, batch_size: int = 4
    ) -> tuple[torch.Tensor, float]:
        """Waveform estimates for valid-length crops, (N, C, T_in) -> (N, S, C, T_out), and the mean loss
        against ``target`` (N, S, C, T_out) computed from the same forward passes (NaN without a target)."""
        self.model.eval()
        outs, losses = [], []
        for i in range(0, mix.shape[0], batch_size):
            part = None if target is None else target[i : i + batch_size].to(self.device)
            out = self._validation_output(mix[i : i + batch_size].to(self.device), part)
            if part is not None:
                losses.append(self._reconstruction(out, part).item() * len(part))
            outs.append(self.model.decode(out).float().cpu())
        loss = sum(losses) / mix.shape[0] if losses else float("nan")
        return torch.cat(outs), loss

    def validate(self) -> dict[str, float]:
        """Median utterance SDR over the fixed validation crops, per source and averaged, plus the valid loss."""
        est, valid_loss = self.estimate(self.valid_mix, self.valid_target)
        sdr = crop_sdr(self.valid_target, est)
        result: dict[str, float] = {names.VALID_LOSS: float(valid_loss)}
        for i, source in enumerate(self.sources):
            result[names.sdr_metric("valid", source)] = nanmedian(sdr[:, i])
        result[names.sdr_metric("valid")] = nanmean(
            [result[names.sdr_metric("valid", s)] for s in self.sources]
        )
        self.history.append({"epoch": self.epoch, **result})
        return result

    def baseline_sdr(self) -> dict[str, float]:
        """Validation SDR of the trivial estimates: the mixture itself and half the mixture, per source."""
        c = (self.valid_mix.shape[-1] - self.valid_target.shape[-1]) // 2
        mix = (
            self.valid_mix[..., c : c + self.valid_target.shape[-1]].unsqueeze(1).expand_as(self.valid_target)
        )
        out = {}
        for name, est in metrics.trivial_estimates(mix).items():
            sdr = crop_sdr(self.valid_target, est)
            for i, source in enumerate(self.sources):
                out[names.sdr_metric("valid", source, name)] = nanmedian(sdr[:, i])
        return out

    # -- persistence -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.batches.state_dict(),  # after the last batch trained on, not the ones drawn ahead
            "epoch": self.epoch,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.batches.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        # a checkpoint loaded with map_location="cuda" moves every tensor there; the CPU generator's state is a
        # CPU byte tensor
        torch.set_rng_state(state["torch_rng"].to("cpu", torch.uint8))
        self.history = json.loads(state["history"])

    def save_checkpoint(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/checkpoint.pt`` (+ ``run_config.json``) atomically."""
        directory = Path(directory)
        with file_written_atomically(directory / CHECKPOINT_FILE, suffix=".pt") as tmp:
            torch.save(self.state_dict(), tmp)
        write_text_atomically(
            directory / names.RUN_CONFIG, json.dumps(self.cfg.to_dict(), indent=2, sort_keys=True)
        )
        return directory / CHECKPOINT_FILE

    def load_checkpoint(self, directory: str | os.PathLike, state: dict[str, Any] | None = None) -> None:
        """Resume from ``directory/checkpoint.pt`` (or its already read ``state``); CheckpointError if it does
        not fit this trainer (another model, a damaged file)."""
        state = read_checkpoint(directory) if state is None else state
        try:
            self.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{Path(directory) / CHECKPOINT_FILE}: does not fit this run's model ({first[:200]})"
            ) from None

    def save_package(self, directory: str | os.PathLike) -> Path:
        return save_package(self.model, directory, self.cfg.model_name, self.sample_rate)

    def close(self) -> None:
        """Stop the batch prefetch thread and drop what it drew ahead (training may go on: it starts again)."""
        self.batches.close()

    @property
    def finished(self) -> bool:
        tc = self.cfg.train
        return self.epoch >= tc.epochs or (
            tc.max_seconds is not None and self.train_seconds >= tc.max_seconds
        )

    @property
    def cut_by_time(self) -> bool:
        """Finished because ``train.max_seconds`` ran out before ``train.epochs`` were trained."""
        return self.finished and self.epoch < self.cfg.train.epochs


# ----------------------------------------------------------------------------------------------------------


def log_package(run, trainer: Trainer) -> None:
    """Log the model package (artifact ``model/``) and the resolved config (``run_config.json``) to ``run``."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer.save_package(Path(tmp) / names.PACKAGE)
        run.log_artifacts(Path(tmp) / names.PACKAGE, names.PACKAGE)
    run.log_dict(trainer.cfg.to_dict(), names.RUN_CONFIG)


def end_trained_run(run, trainer: Trainer, cut_by: str | None = None) -> None:
    """Tag ``run`` with how its training ended and end it FINISHED: outcome ``finished``, or ``cut_by_time`` when
    the time limit ``cut_by`` (:data:`names.TRAIN_LIMIT`, ``TRIAL_LIMIT``, ``SWEEP_LIMIT``) ended it before its
    budget of epochs; the epochs trained and the training seconds."""
    tags = {
        names.OUTCOME: names.CUT_BY_TIME if cut_by else names.FINISHED,
        names.EPOCHS: trainer.epoch,
        names.TRAIN_SECONDS: round(trainer.train_seconds, 1),
    }
    if cut_by:
        tags[names.CUT_BY] = cut_by
    run.set_tags(tags)
    run.end("FINISHED")
