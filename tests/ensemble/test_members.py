"""An ensemble separates a file as a stream: each member at its own rate and chunk length, combined block by
block; the result is its members' own file separations weighted, sums to the mixture, and does not depend on
the chunk lengths."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch

from sepray import SOURCES
from sepray.audio import AudioReader, read_audio
from sepray.ensemble.members import Ensemble
from sepray.ensemble.package import load_members
from sepray.ensemble.weights import combine
from sepray.separate import separate_file, separate_song, separate_stream
from tests.test_streaming import long_file_peak_growth


def song_file(path, seconds=2.3, rate=22050, channels=2, peak=0.9):
    rng = np.random.default_rng(5)
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.2 * rng.standard_normal((len(t), channels)) + 0.3 * np.sin(2 * np.pi * 440 * t)[:, None]
    audio *= peak / np.abs(audio).max()
    sf.write(str(path), audio.astype(np.float32), rate, subtype="FLOAT")
    return path


def test_a_file_is_its_members_separations_weighted_and_sums_to_the_mixture(tmp_path, ensemble_package):
    """Members at 8 and 16 kHz, the song at 22.05 kHz stereo: the written files are what each member streams
    alone, combined (weighted, the residual of the Wave-U-Net's unconstrained outputs shared), equal the
    in-memory path and sum to the mixture."""
    ensemble = Ensemble(*load_members(ensemble_package))
    path = song_file(tmp_path / "song.wav")
    out = separate_file(
        ensemble, ensemble.config, path, tmp_path / "out", chunk_seconds=0.4, show_progress=False
    )
    written = {s: read_audio(out / f"{s}.wav")[0] for s in SOURCES}
    mix, rate = read_audio(path)
    assert all(w.shape == mix.shape for w in written.values())
    assert torch.allclose(written["vocals"] + written["accompaniment"], mix, atol=1e-5)
    alone = []
    for model, info in ensemble.members:
        with AudioReader(path) as reader:
            blocks = list(separate_stream(model, reader, info.sample_rate, 0.4))
        alone.append({s: torch.cat([b[s] for b in blocks], dim=-1) for s in SOURCES})
    combined = combine(alone, ensemble.weights, mix)  # the weighted sum, its residual shared
    for s in SOURCES:
        assert torch.allclose(written[s], combined[s], atol=1e-5), s
    spec_unet = alone[1]  # softmax masks: its estimates sum to the mixture, nothing to share
    assert torch.allclose(spec_unet["vocals"] + spec_unet["accompaniment"], mix, atol=1e-5)
    in_memory = ensemble.separate_song(mix, rate, 0.4)
    for model, info in ensemble.members:  # the in-memory path resamples each member the same way
        assert torch.allclose(
            separate_song(model, mix, rate, info.sample_rate, 0.4)["vocals"],
            alone[ensemble.members.index((model, info))]["vocals"],
            atol=1e-5,
        )
    for s in SOURCES:
        assert torch.allclose(in_memory[s], written[s], atol=1e-5), s


def test_each_member_its_own_chunk_length_gives_the_same_file(tmp_path, ensemble_package):
    ensemble = Ensemble(*load_members(ensemble_package))
    path = song_file(tmp_path / "song.wav", seconds=3.1, rate=16000, channels=1)
    first = separate_file(
        ensemble, ensemble.config, path, tmp_path / "a", chunk_seconds=2.0, show_progress=False
    )
    ensemble.chunk_seconds = (0.25, 1.3)  # many short Wave-U-Net calls, few long U-Net calls
    second = separate_file(
        ensemble, ensemble.config, path, tmp_path / "b", chunk_seconds=2.0, show_progress=False
    )
    for s in SOURCES:
        assert torch.allclose(
            read_audio(first / f"{s}.wav")[0], read_audio(second / f"{s}.wav")[0], atol=1e-5
        )


def test_a_song_beyond_full_scale_is_scaled_for_the_members_and_back(tmp_path, ensemble_package):
    ensemble = Ensemble(*load_members(ensemble_package))
    path = song_file(tmp_path / "loud.wav", seconds=1.2, rate=16000, channels=1, peak=4.0)
    notes = []
    out = separate_file(
        ensemble,
        ensemble.config,
        path,
        tmp_path / "out",
        chunk_seconds=1.0,
        show_progress=False,
        log=notes.append,
    )
    mix, _ = read_audio(path)
    total = read_audio(out / "vocals.wav")[0] + read_audio(out / "accompaniment.wav")[0]
    assert torch.allclose(total, mix, atol=4e-5) and any("beyond full scale" in n for n in notes)


MEMORY_PROBE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    import torch
    from tests.ensemble.conftest import member_configs_raw, save_member
    from sepray.ensemble.members import Ensemble
    from sepray.ensemble.package import EnsembleConfig, load_members, member_configs, save_ensemble
    from sepray.package import read_package_info
    from sepray.separate import separate_file

    torch.set_num_threads(1)
    long_song, short_song, out = map(Path, sys.argv[1:4])
    packages = [save_member(raw, out / f"m{i}", i) for i, raw in enumerate(member_configs_raw())]
    infos = [read_package_info(p) for p in packages]
    config = EnsembleConfig(member_configs(infos, (0.5, 0.5), [None, None]), 16000)
    ensemble = Ensemble(*load_members(save_ensemble(out / "e", config, packages)))
    ensemble.chunk_seconds = (2.0, 3.0)
    separate_file(ensemble, config, short_song, out, show_progress=False)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    separate_file(ensemble, config, long_song, out, show_progress=False)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB only on Linux")
def test_memory_stays_bounded_on_a_long_file(tmp_path):
    """10 minutes of 16 kHz mono (38 MB decoded as float32) through both members: the peak RSS grows by a small
    fraction of that (the members stream in step; only the gap between them is held)."""
    growth, decoded = long_file_peak_growth(tmp_path, MEMORY_PROBE)
    print(f"peak RSS growth {growth / 1e6:.1f} MB for a {decoded / 1e6:.0f} MB song")
    assert growth < decoded / 4, f"peak RSS grew by {growth / 1e6:.1f} MB for a {decoded / 1e6:.0f} MB song"
