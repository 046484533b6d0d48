"""Full-song separation: chunked inference that respects each model's geometry, and file-level separation.

Chunking is exact: for every model the chunked result equals running the model once on the whole (padded)
song, because chunks carry the model's full context (valid models) or halo (same-padding models) and start
at multiples of the model's ``step``. Files are separated as a stream (:func:`separate_stream`): read in
blocks, resampled block by block in whole resampling periods plus the filter's reach (so the result equals
resampling the whole file), separated chunk by chunk, resampled back and written block by block. Memory is
bounded by the chunk length, not the song length.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from sepray import SOURCES, dsp
from sepray.audio import AudioReader, AudioWriter
from sepray.device import generation_threads, torch_threads
from sepray.errors import UsageError
from sepray.headroom import BlockReader, level_of, write_unclipped
from sepray.models import Separator
from sepray.output_folders import (
    SEPARATION,
    check_inputs,
    check_output_folder,
    check_output_root,
    missing_folders,
    remove_if_failed,
    remove_stale_partials,
    song_folder_written,
)
from sepray.owned_folders import write_manifest
from sepray.package import PackageInfo
from sepray.progress import separation_progress


def _plan_chunk(model: Separator, chunk: int) -> tuple[int, int, int, int]:
    """(input_length, stride, left, right) for a valid-convolution model and a wanted chunk output length."""
    step = model.step
    n_in = model.input_length(max(chunk, step))
    n_out = model.output_length(n_in)
    stride = max(step, (n_out // step) * step)
    left = (n_in - n_out) // 2
    return n_in, stride, left, n_in - n_out - left


def chunk_windows(model: Separator, length: int, chunk: int) -> Iterator[tuple[int, int, int, int, int]]:
    """The model calls that separate a signal of ``length`` samples, in order, as (w0, w1, a, b, offset).

    Each call gets input samples [w0, w1) (zeros outside [0, length)) and its output samples
    [offset, offset + b - a) are the result for samples [a, b). The [a, b) ranges tile [0, length) in order;
    ``chunk`` is the number of output samples wanted per call (rounded to the model's step).
    """
    step = model.step
    chunk = max(step, (chunk // step) * step)
    if model.halo == 0:
        n_in, stride, left, _ = _plan_chunk(model, chunk)
        for a in range(0, length, stride):
            yield a - left, a - left + n_in, a, min(length, a + stride), 0
        return
    t_pad = _padded_length(model, length)
    for a in range(0, t_pad, chunk):
        b = min(t_pad, a + chunk)
        w0, w1 = max(0, a - model.halo), min(t_pad, b + model.halo)
        yield w0, w1, a, min(b, length), a - w0


def _padded_length(model: Separator, length: int) -> int:
    """A same-padding model (halo > 0) sees a song zero-padded to its smallest valid input holding it: a
    multiple of ``step`` and at least its shortest input (STFT models), so a song of one sample separates."""
    return model.input_length(max(length, 1))


def _segment(x: torch.Tensor, x_start: int, start: int, stop: int) -> torch.Tensor:
    """Samples [start, stop) of a signal that is ``x`` from sample ``x_start`` on and zero elsewhere.

    (..., n) -> (..., stop - start); a view of ``x`` when the range lies inside it.
    """
    lo, hi = max(start, x_start), min(stop, x_start + x.shape[-1])
    if lo == start and hi == stop:
        return x[..., start - x_start : stop - x_start]
    out = x.new_zeros(*x.shape[:-1], stop - start)
    if hi > lo:
        out[..., lo - start : hi - start] = x[..., lo - x_start : hi - x_start]
    return out


def _model_call(model: Separator, x: torch.Tensor, device: torch.device | str, clamp: bool = True):
    """(B, C, n) -> waveforms (B, S, C, n'); ``clamp=False`` keeps a regression head's waveforms as they are
    (its ``decode`` only clamps them to [-1, 1]), so that estimates summing to the mixture still do."""
    y = model(x.to(device))
    return (model.decode(y) if clamp or model.head != "regression" else y).float().cpu()


@torch.no_grad()
def run_chunked(
    model: Separator,
    mix: torch.Tensor,
    chunk: int,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    clamp: bool = True,
) -> torch.Tensor:
    """Separate a batch of long signals. mix (B, C, T) -> waveforms (B, S, C, T).

    ``chunk`` is the number of output samples computed per model call (rounded to the model's step).
    """
    model.eval()
    B, C, T = mix.shape
    out = torch.zeros(B, len(model.sources), C, T)
    for w0, w1, a, b, offset in chunk_windows(model, T, chunk):
        y = _model_call(model, _segment(mix, 0, w0, w1), device, clamp)
        out[..., a:b] = y[..., offset : offset + b - a]
        if progress:
            progress(1)
    return out


def count_chunks(model: Separator, length: int, chunk: int) -> int:
    """Number of model calls :func:`run_chunked` makes for a signal of ``length`` samples."""
    return sum(1 for _ in chunk_windows(model, length, chunk))


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
        x = dsp.pad_to(mix, 0, _padded_length(model, T) - T)
    return _model_call(model, x, device)[..., :T]


def _model_batch(model: Separator, mix: torch.Tensor) -> torch.Tensor:
    """A song's mixture (C, T) -> the model's input batch (B, Cm, T)."""
    if mix.dim() != 2:
        raise ValueError(f"expected a (channels, time) mixture, got {tuple(mix.shape)}")
    if model.audio_channels == 1:
        return mix.unsqueeze(1)  # (C, 1, T): each channel on its own
    return dsp.remix(mix, model.audio_channels).unsqueeze(0)  # (1, Cm, T)


def _song_estimates(model: Separator, y: torch.Tensor, mix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Model output (B, S, Cm, T) for a batch made by _model_batch(mix) -> {source: (C, T)} for all SOURCES."""
    C = mix.shape[0]
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


def separate_tensor(
    model: Separator,
    mix: torch.Tensor,
    chunk_seconds: float = 10.0,
    sample_rate: int = 16000,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    clamp: bool = True,
) -> dict[str, torch.Tensor]:
    """Separate one song already at the model's rate. mix (C, T) -> {source: (C, T)} for every source in SOURCES.

    A model with one audio channel separates each input channel on its own; a source the model does not
    predict is the mixture minus the sources it does predict (vocals = mix - accompaniment, and so on).
    """
    batch = _model_batch(model, mix)
    y = run_chunked(model, batch, max(1, round(chunk_seconds * sample_rate)), device, progress, clamp)
    return _song_estimates(model, y, mix)


def separate_song(
    model: Separator,
    mix: torch.Tensor,
    sample_rate: int,
    model_rate: int,
    chunk_seconds: float = 10.0,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Separate a whole song held in memory at any rate. mix (C, T) -> {source: (C, T)} at ``sample_rate``.

    Resamples the whole song to ``model_rate``, runs :func:`separate_tensor` (unclamped), resamples back.
    The in-memory reference for :func:`separate_stream`, which gives the same result in bounded memory.
    """
    T = mix.shape[-1]
    low = dsp.resample(mix, sample_rate, model_rate)  # the mixture at the model rate
    est = separate_tensor(model, low, chunk_seconds, model_rate, device, clamp=False)
    est = {name: _segment(dsp.resample(y, model_rate, sample_rate), 0, 0, T) for name, y in est.items()}
    if sample_rate > model_rate:
        _add_high_band(est, mix - _segment(dsp.resample(low, model_rate, sample_rate), 0, 0, T))
    return est


HIGH_BAND_SOURCE = "accompaniment"  # gets the mixture's content above the model's band


def _add_high_band(est: dict[str, torch.Tensor], high: torch.Tensor) -> None:
    """Full-band output: a song at a higher rate than the model's keeps the mixture's content the model never
    saw (above its Nyquist frequency), added to the accompaniment, so the estimates still sum to the mixture.

    ``high`` (C, T) is the mixture minus the mixture resampled to the model rate and back."""
    est[HIGH_BAND_SOURCE] = est[HIGH_BAND_SOURCE] + high


@torch.no_grad()
def separate_stream(
    model: Separator,
    reader: BlockReader,
    model_rate: int,
    chunk_seconds: float = 10.0,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Separate a song block by block: yields {source: (channels, n)} for every source in SOURCES, at the
    reader's rate, in order; the blocks together are ``reader.frames`` samples long.

    A song at a higher rate than the model's keeps its full band (:func:`_add_high_band`).
    Equals :func:`separate_song` on the whole song (up to float rounding) while holding only about one chunk
    of ``chunk_seconds`` (at the model rate) plus resampling margins in memory. ``progress(1)`` is called
    after each model call (:func:`count_chunks` at the model rate of them).
    """
    model.eval()
    rate, T = reader.samplerate, reader.frames
    Tm = dsp.resampled_length(T, rate, model_rate)  # the song's length at the model rate
    inp, out, margin = dsp.resampling_period(model_rate, rate)  # estimates -> output
    full_band = rate > model_rate  # then the mixture's band above the model's goes to the accompaniment
    # estimates (S, C, n) at the model rate, and the mixture at the model rate as one more row ...
    held = torch.zeros(len(SOURCES) + 1, reader.channels, 0)
    held_start = 0  # ... for samples [held_start, held_start + n)
    done = 0  # output samples yielded

    def read_held(a: int, b: int) -> torch.Tensor:
        if max(a, 0) < held_start or min(b, Tm) > held_start + held.shape[-1]:
            raise AssertionError(f"estimates [{a}, {b}) not held ([{held_start}, +{held.shape[-1]}))")
        return _segment(held, held_start, a, b)  # zeros from Tm on: held never reaches past Tm

    for w0, w1, a, b, offset in chunk_windows(model, Tm, max(1, round(chunk_seconds * model_rate))):
        lo, hi = max(w0, 0), max(min(w1, Tm), w0)
        window = _segment(
            dsp.resample_range(reader.read, rate, model_rate, lo, hi), lo, w0, w1
        )  # (C, w1 - w0)
        y = _model_call(model, _model_batch(model, window), device, clamp=False)[..., offset : offset + b - a]
        est = _song_estimates(model, y, window[:, a - w0 : b - w0])
        rows = [est[name] for name in SOURCES] + [window[:, a - w0 : b - w0]]
        held = torch.cat([held, torch.stack(rows)], dim=-1)
        if progress:
            progress(1)
        # output samples whose estimates (with the filter's reach) are all known
        ready = T if b == Tm else min(T, (b // inp - margin) * out)
        if ready > done:
            y = dsp.resample_range(read_held, model_rate, rate, done, ready)  # (S + 1, C, ready - done)
            keep = (ready // out - margin) * inp  # the first estimate the next block reads
            if keep > held_start:
                held, held_start = held[..., keep - held_start :], keep
            block = {name: y[i] for i, name in enumerate(SOURCES)}
            if full_band:
                _add_high_band(block, reader.read(done, ready) - y[-1])
            done = ready
            yield block


def separate_file(
    model: Separator,
    info: PackageInfo,
    path: Path,
    outdir: Path,
    device: torch.device | str = "cpu",
    chunk_seconds: float = 10.0,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Separate one audio file into ``outdir/<song>/{vocals,accompaniment}.wav`` at the input's rate/channels.

    16-bit PCM, or 32-bit float when the input is float or an estimate exceeds full scale (``log`` says so).

    Streams the file (:func:`separate_stream`; ``model`` may also be an ensemble, whose ``file_stream`` streams
    its members, :mod:`sepray.ensemble.members`): memory does not grow with the song's length. The song's folder
    is written under a temporary name and renamed into place when complete; nothing is left on an error (nor
    the folders it created). A previous separation already at ``outdir/<song>`` is replaced (``log`` says
    so); anything else there is an error and is left untouched (:func:`check_output_folder`).
    """
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(AudioReader(path))
        target = outdir / path.stem
        if check_output_folder(target, [path]) and log is not None:
            log(f"replacing the previous separation in {target}")
        file_stream = getattr(model, "file_stream", None)  # an ensemble streams its members (sepray.ensemble)
        if file_stream is None:
            length = dsp.resampled_length(reader.frames, reader.samplerate, info.sample_rate)
            chunk = max(1, round(chunk_seconds * info.sample_rate))
            n = count_chunks(model, length, chunk)
            progress = stack.enter_context(separation_progress(model, n, chunk, path.name, show_progress))
            stack.enter_context(torch_threads(generation_threads(model, device)))
            args = {"model_rate": info.sample_rate, "chunk_seconds": chunk_seconds, "device": device}
            stream = functools.partial(separate_stream, model, progress=progress, **args)
        else:
            stream = stack.enter_context(file_stream(reader, chunk_seconds, device, path.name, show_progress))
        created = missing_folders(outdir)
        stack.push(functools.partial(remove_if_failed, created))
        outdir.mkdir(parents=True, exist_ok=True)
        level = level_of(reader)  # float in, float out; beyond full scale: scaled for the model and back
        with song_folder_written(target, [path]) as tmp, contextlib.ExitStack() as files:
            writers = {
                name: files.enter_context(
                    AudioWriter(tmp / f"{name}.wav", reader.samplerate, reader.channels, level.subtype)
                )
                for name in SOURCES
            }
            notes = [level.note(path)]
            blocks = stream(level.reader)
            for block in blocks:
                if (peak := write_unclipped(writers, level.restore(block))) is not None:
                    notes.append(f"{path}: an estimate peaks at {peak:.2f}: written as 32-bit float WAVs")
            files.close()
            written = {w.frames for w in writers.values()}
            if written != {reader.frames}:
                raise AssertionError(f"{path}: wrote {sorted(written)} frames, expected {reader.frames}")
            fields = {"input": str(path.resolve()), "subtype": writers[SOURCES[0]].subtype}
            fields |= {"sample_rate": reader.samplerate, "channels": reader.channels, "frames": reader.frames}
            write_manifest(tmp, SEPARATION, files=[w.path.name for w in writers.values()], **fields)
    for note in filter(None, notes if log is not None else []):
        log(note)
    return target


def load_run_model(run_id: str, device="cpu", uri: str | None = None, engine: str = "torch", log=None):
    """The model package of MLflow run ``run_id`` -> (model, PackageInfo); ``engine``: torch (eager) | onnx |
    torch-export (the run's exported graph, :func:`sepray.export.load_package_engine`)."""
    from sepray.export.package import load_package_engine
    from sepray.package import run_package

    with run_package(run_id, uri) as package:
        return load_package_engine(package, engine, device, log)


def separate_run(
    run_id: str,
    inputs: list[str | os.PathLike],
    outdir: str | os.PathLike = "separated",
    device: str = "auto",
    chunk_seconds: float | None = None,
    uri: str | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
    max_memory: int | None = None,
    engine: str = "torch",
) -> list[Path]:
    """``sepray separate``: check every input and output folder, load the run's model, separate each file;
    return the output folders. ``log`` gets a line for each previous separation replaced, each stale partial
    one removed (:func:`remove_stale_partials`) and each song written as float.

    ``engine``: torch | onnx | torch-export (the run's export, made on the fly if absent; CPU: auto = cpu).
    ``chunk_seconds=None``: the longest chunk whose model call fits ``max_memory`` bytes (default: half the
    free memory of the device, at most 2 GiB; see :mod:`sepray.chunk_budget`).
    """
    from sepray.chunk_budget import auto_chunk_seconds, default_max_memory, format_memory
    from sepray.device import resolve_device

    if chunk_seconds is not None and not (math.isfinite(chunk_seconds) and chunk_seconds > 0):
        raise UsageError(f"chunk_seconds must be a finite number > 0, got {chunk_seconds}")
    paths, outdir = [Path(p) for p in inputs], Path(outdir)
    check_inputs(paths)
    check_output_root(outdir)
    for path in paths:
        check_output_folder(outdir / path.stem, paths)
    remove_stale_partials(outdir, log)
    dev = resolve_device("cpu" if engine != "torch" and device == "auto" else device)
    model, info = load_run_model(run_id, dev, uri, engine, log)
    if chunk_seconds is None:
        budget = default_max_memory(dev) if max_memory is None else max_memory
        chunk_seconds = auto_chunk_seconds(getattr(model, "eager", model), info.sample_rate, budget, dev)
        if show_progress:
            print(f"{chunk_seconds:.3g} s chunks (memory budget {format_memory(budget)})", file=sys.stderr)
    return [separate_file(model, info, p, outdir, dev, chunk_seconds, show_progress, log) for p in paths]
