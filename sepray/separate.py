"""Full-song separation: chunked inference that respects each model's geometry, and file-level separation.

Chunking is exact: for every model the chunked result equals running the model once on the whole (padded)
song, because chunks carry the model's full context (valid models) or halo (same-padding models) and start
at multiples of the model's ``step``. Memory is bounded by the chunk length, not the song length.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from sepray import SOURCES, dsp
from sepray.audio import AudioError, audio_info, read_audio, write_audio
from sepray.models import Separator
from sepray.package import PackageInfo


def _plan_chunk(model: Separator, chunk: int) -> tuple[int, int, int, int]:
    """(input_length, stride, left, right) for a valid-convolution model and a wanted chunk output length."""
    step = model.step
    n_in = model.input_length(max(chunk, step))
    n_out = model.output_length(n_in)
    stride = max(step, (n_out // step) * step)
    left = (n_in - n_out) // 2
    return n_in, stride, left, n_in - n_out - left


@torch.no_grad()
def run_chunked(
    model: Separator,
    mix: torch.Tensor,
    chunk: int,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Separate a batch of long signals. mix (B, C, T) -> waveforms (B, S, C, T).

    ``chunk`` is the number of output samples computed per model call (rounded to the model's step).
    """
    model.eval()
    B, C, T = mix.shape
    S = len(model.sources)
    out = torch.zeros(B, S, C, T)
    step = model.step
    chunk = max(step, (chunk // step) * step)

    def call(x: torch.Tensor) -> torch.Tensor:
        return model.decode(model(x.to(device))).float().cpu()

    if model.halo == 0:
        n_in, stride, left, right = _plan_chunk(model, chunk)
        n_chunks = math.ceil(T / stride)
        need = (n_chunks - 1) * stride + n_in
        padded = dsp.pad_to(mix, left, need - left - T)
        for k in range(n_chunks):
            y = call(padded[..., k * stride : k * stride + n_in])[..., :stride]
            a = k * stride
            b = min(T, a + stride)
            out[..., a:b] = y[..., : b - a]
            if progress:
                progress(1)
        return out
    halo = model.halo
    t_pad = math.ceil(T / step) * step
    padded = dsp.pad_to(mix, 0, t_pad - T)
    for a in range(0, t_pad, chunk):
        b = min(t_pad, a + chunk)
        w0, w1 = max(0, a - halo), min(t_pad, b + halo)
        y = call(padded[..., w0:w1])
        b_out = min(b, T)
        if b_out > a:
            out[..., a:b_out] = y[..., a - w0 : b_out - w0]
        if progress:
            progress(1)
    return out


def count_chunks(model: Separator, length: int, chunk: int) -> int:
    step = model.step
    chunk = max(step, (chunk // step) * step)
    if model.halo == 0:
        return math.ceil(length / _plan_chunk(model, chunk)[1])
    return math.ceil(math.ceil(length / step) * step / chunk)


@torch.no_grad()
def run_whole(model: Separator, mix: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """One model call on the whole signal (padded as run_chunked pads). (B, C, T) -> (B, S, C, T)."""
    model.eval()
    T = mix.shape[-1]
    if model.halo == 0:
        n_in = model.input_length(T)
        n_out = model.output_length(n_in)
        left = (n_in - n_out) // 2
        x = dsp.pad_to(mix, left, n_in - left - T)
    else:
        x = dsp.pad_to(mix, 0, math.ceil(T / model.step) * model.step - T)
    return model.decode(model(x.to(device))).float().cpu()[..., :T]


def separate_tensor(
    model: Separator,
    mix: torch.Tensor,
    chunk_seconds: float = 10.0,
    sample_rate: int = 16000,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Separate one song already at the model's rate. mix (C, T) -> {source: (C, T)} for every source in SOURCES.

    A model with one audio channel separates each input channel on its own; a source the model does not
    predict is the mixture minus the sources it does predict (vocals = mix - accompaniment, and so on).
    """
    if mix.dim() != 2:
        raise ValueError(f"expected a (channels, time) mixture, got {tuple(mix.shape)}")
    C = mix.shape[0]
    if model.audio_channels == 1:
        batch = mix.unsqueeze(1)  # (C, 1, T): each channel on its own
    else:
        batch = dsp.remix(mix, model.audio_channels).unsqueeze(0)  # (1, Cm, T)
    y = run_chunked(model, batch, max(1, round(chunk_seconds * sample_rate)), device, progress)
    if model.audio_channels == 1:
        est = y[:, :, 0].transpose(0, 1)  # (S, C, T)
    else:
        est = torch.stack([dsp.remix(s, C) for s in y[0]])
    result = {name: est[i] for i, name in enumerate(model.sources)}
    missing = [s for s in SOURCES if s not in result]
    if missing:
        rest = mix - sum(result.values())
        for name in missing:
            result[name] = rest / len(missing)
    return result


def check_inputs(paths: list[Path]) -> None:
    """Fail (one line naming the file) before anything is written when an input cannot be separated."""
    if not paths:
        raise AudioError("no input files given")
    for path in paths:
        if not path.is_file():
            raise AudioError(f"{path}: no such file")
        _, _, frames = audio_info(path)
        if frames == 0:
            raise AudioError(f"{path}: empty audio file (0 samples)")
    names = [p.stem for p in paths]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise AudioError(f"two inputs would write the same output folder {sorted(dupes)[0]!r}; rename one")


def separate_file(
    model: Separator,
    info: PackageInfo,
    path: Path,
    outdir: Path,
    device: torch.device | str = "cpu",
    chunk_seconds: float = 10.0,
    show_progress: bool = True,
) -> Path:
    """Separate one audio file into ``outdir/<song>/{vocals,accompaniment}.wav`` at the input's rate/channels."""
    audio, sr = read_audio(path)
    C, T = audio.shape
    x = dsp.resample(audio, sr, info.sample_rate)
    n = count_chunks(model, x.shape[-1], max(1, round(chunk_seconds * info.sample_rate)))
    bar = tqdm(total=n, desc=path.name, unit="chunk", file=sys.stderr, disable=not show_progress)
    try:
        est = separate_tensor(model, x, chunk_seconds, info.sample_rate, device, progress=bar.update)
    finally:
        bar.close()
    target = outdir / path.stem
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.stem}-", dir=outdir))
    try:
        for name in SOURCES:
            y = dsp.resample(est[name], info.sample_rate, sr)
            y = dsp.pad_to(y, 0, max(0, T - y.shape[-1]))[..., :T]
            write_audio(tmp / f"{name}.wav", y, sr)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_run_model(run_id: str, device: torch.device | str = "cpu", uri: str | None = None):
    """Download and load the model package logged by MLflow run ``run_id`` -> (model, PackageInfo)."""
    from sepray import tracking
    from sepray.package import load_package

    with tempfile.TemporaryDirectory(prefix="sepray-package-") as tmp:
        pkg = tracking.download_package(run_id, tmp, uri)
        return load_package(pkg, device)


def separate_run(
    run_id: str,
    inputs: list[str | os.PathLike],
    outdir: str | os.PathLike = "separated",
    device: str = "auto",
    chunk_seconds: float = 10.0,
    uri: str | None = None,
    show_progress: bool = True,
) -> list[Path]:
    """``sepray separate``: check every input, load the run's model, separate each file; return output folders."""
    from sepray.train import resolve_device

    paths = [Path(p) for p in inputs]
    check_inputs(paths)
    dev = resolve_device(device)
    model, info = load_run_model(run_id, dev, uri)
    return [separate_file(model, info, p, Path(outdir), dev, chunk_seconds, show_progress) for p in paths]
