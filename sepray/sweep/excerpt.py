"""The audio excerpt logged on a finished trial's MLflow run: a few seconds of a validation song, separated.

``excerpt/`` holds the mixture, each source's estimate and reference as WAV files, and their log-magnitude
spectrograms stacked in one figure, for people to listen to and look at in the MLflow UI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sepray import names, tracking


def log_excerpt(run: tracking.Run, trainer, seconds: float) -> None:
    """``excerpt/``: mixture, estimate and reference WAVs of a few seconds of a validation song + spectrograms."""
    import torch

    from sepray.audio import write_audio
    from sepray.separate import separate_tensor

    songs = trainer.splits.get("valid") or trainer.splits.get("test") or trainer.splits["train"]
    song = songs[0]
    sr = trainer.sample_rate
    n = min(song.mix.shape[-1], max(1, round(seconds * sr)))
    vocals = song.sources.get("vocals", song.mix)
    energy = vocals.pow(2).mean(0)
    hop = max(1, sr // 4)
    starts = list(range(0, song.mix.shape[-1] - n + 1, hop)) or [0]
    start = max(starts, key=lambda s: float(energy[s : s + n].sum()))
    mix = song.mix[..., start : start + n]
    trainer.model.eval()
    with torch.no_grad():
        est = separate_tensor(trainer.model, mix, seconds + 1.0, sr, trainer.device)
    tracks = {"mixture": mix}
    for name in trainer.sources:
        tracks[f"{name}_estimate"] = est[name]
        tracks[f"{name}_reference"] = song.sources[name][..., start : start + n]
    with tempfile.TemporaryDirectory(prefix="sepray-excerpt-") as tmp:
        for name, audio in tracks.items():
            write_audio(Path(tmp) / f"{name}.wav", audio, sr)
        run.log_artifacts(tmp, names.EXCERPT)
    run.log_figure(
        spectrogram_figure(tracks, sr, f"{song.name} @ {start / sr:.1f} s"),
        f"{names.EXCERPT}/spectrograms.png",
    )


def spectrogram_figure(tracks: dict[str, Any], sample_rate: int, title: str):
    """One log-magnitude spectrogram per track (first channel), stacked vertically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    n_fft = 512 if sample_rate <= 22050 else 1024
    fig, axes = plt.subplots(len(tracks), 1, figsize=(8, 1.6 * len(tracks)), sharex=True, squeeze=False)
    for ax, (name, audio) in zip(axes[:, 0], tracks.items(), strict=True):
        x = audio[0].float()
        spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()
        db = 20 * torch.log10(spec + 1e-5)
        duration = x.shape[-1] / sample_rate
        ax.imshow(
            db.numpy(),
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=float(db.max()) - 80,
            vmax=float(db.max()),
            extent=(0.0, duration, 0.0, sample_rate / 2000),
        )
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig
