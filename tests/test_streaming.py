"""Streaming separation: block-wise reading, resampling, separation and writing equals the whole-song path,
keeps the output folder all-or-nothing, and holds memory bounded by the chunk, not the song."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sepray import SOURCES, dsp
from sepray.atomic import folder_written_atomically
from sepray.audio import AudioError, AudioReader, AudioWriter, read_audio
from sepray.config import load_config
from sepray.errors import UserError
from sepray.models import build_model
from sepray.output_folders import SEPARATION_MANIFEST
from sepray.package import PackageInfo
from sepray.separate import (
    run_chunked,
    run_whole,
    separate_file,
    separate_song,
    separate_stream,
)
from tests.models.test_models import TINY_STRUCTURE_A, TINY_UMT
from tests.test_package_and_separate import TINY, tiny


def unittest_model(*overrides: str):
    cfg = load_config("unittest", overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model_name, cfg.model)
    return model, PackageInfo(cfg.model_name, cfg.model, cfg.data.sample_rate, 1, tuple(SOURCES))


def noise_file(path: Path, seconds: float, rate: int, channels: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal((round(seconds * rate), channels)) * 0.2).astype(np.float32)
    sf.write(str(path), audio, rate, subtype="FLOAT")
    return path


@pytest.mark.parametrize("rates", [(44100, 8000), (8000, 44100), (48000, 44100), (16000, 16000)])
def test_resample_range_equals_resampling_whole(rates):
    torch.manual_seed(0)
    x = torch.randn(2, 20000)
    whole = dsp.resample(x, *rates)

    def read(a: int, b: int) -> torch.Tensor:
        out = torch.zeros(2, b - a)
        lo, hi = max(a, 0), min(b, x.shape[-1])
        if hi > lo:
            out[:, lo - a : hi - a] = x[:, lo:hi]
        return out

    n = whole.shape[-1]
    for a, b in [(0, 7), (123, n - 456), (n - 300, n), (n // 2, n // 2 + 1)]:
        assert torch.allclose(dsp.resample_range(read, *rates, a, b), whole[:, a:b], atol=1e-6)


def test_reader_pads_with_zeros_and_writer_round_trips(tmp_path):
    path = noise_file(tmp_path / "x.wav", 0.1, 8000, 2)
    whole, _ = read_audio(path)
    with AudioReader(path) as reader:
        assert (reader.samplerate, reader.channels, reader.frames) == (8000, 2, 800)
        block = reader.read(-5, 805)
    assert block.shape == (2, 810) and torch.equal(block[:, 5:805], whole)
    assert not block[:, :5].any() and not block[:, 805:].any()
    with AudioWriter(tmp_path / "y.wav", 8000, 2, subtype="FLOAT") as writer:
        writer.write(whole[:, :300])
        writer.write(whole[:, 300:])
    assert torch.equal(read_audio(tmp_path / "y.wav")[0], whole)
    with pytest.raises(RuntimeError, match="boom"), AudioWriter(tmp_path / "z.wav", 8000, 2) as writer:
        writer.write(whole)
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav", "y.wav"]


def test_separate_file_equals_whole_song_path(tmp_path):
    """20 s of 44.1 kHz stereo through the 8 kHz unittest model, 3 s chunks: same as in memory (this float
    noise peaks above full scale: both separate it at 1 / peak of its level and scale back)."""
    model, info = unittest_model()
    path = noise_file(tmp_path / "song.wav", 20.0, 44100, 2)
    mix, rate = read_audio(path)
    peak = float(mix.abs().max())
    assert peak > 1.0
    reference = separate_song(model, mix / peak, rate, info.sample_rate, chunk_seconds=3.0)
    folder = separate_file(model, info, path, tmp_path / "out", chunk_seconds=3.0, show_progress=False)
    assert folder == tmp_path / "out" / "song"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["song"]
    for name in SOURCES:
        got, got_rate = read_audio(folder / f"{name}.wav")
        assert got_rate == rate and got.shape == mix.shape
        error = (got - reference[name] * peak).abs().max().item()
        assert error < 1e-5, (name, error)  # float input -> float output: no PCM rounding


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("extra", [{}, {"sources": ("accompaniment",)}, {"audio_channels": 2}])
def test_stream_equals_whole_song_for_every_model(key, extra, tmp_path):
    if key == "waveunet-same" and "sources" in extra:
        extra = {**extra, "output": "direct"}  # a 'difference' output needs two sources
    _, model = tiny(key, **extra)
    path = noise_file(tmp_path / "song.wav", 1.5, 11025, 2)
    mix, rate = read_audio(path)
    reference = separate_song(model, mix, rate, 8000, chunk_seconds=0.2)
    calls = []
    with AudioReader(path) as reader:
        blocks = list(separate_stream(model, reader, 8000, chunk_seconds=0.2, progress=calls.append))
    assert len(blocks) > 3 and len(calls) >= len(blocks)
    for name in SOURCES:
        got = torch.cat([block[name] for block in blocks], dim=-1)
        assert got.shape == mix.shape
        assert torch.allclose(got, reference[name], atol=1e-5), (got - reference[name]).abs().max()


def test_failure_mid_song_leaves_no_output(tmp_path, monkeypatch):
    model, info = unittest_model()
    path = noise_file(tmp_path / "song.wav", 5.0, 8000, 1)
    out = tmp_path / "out"
    separate_file(model, info, path, out, chunk_seconds=1.0, show_progress=False)
    before = {name: read_audio(out / "song" / f"{name}.wav")[0] for name in SOURCES}
    calls = []
    real_forward = model.forward

    def fail_on_third_call(x):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("model broke")
        return real_forward(x)

    monkeypatch.setattr(model, "forward", fail_on_third_call)
    with pytest.raises(RuntimeError, match="model broke"):
        separate_file(model, info, path, out, chunk_seconds=1.0, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["song"]  # no temp folder left behind
    written = sorted(p.name for p in (out / "song").iterdir())
    assert written == sorted([SEPARATION_MANIFEST, *(f"{s}.wav" for s in SOURCES)])
    for name in SOURCES:  # the earlier result is untouched
        assert torch.equal(read_audio(out / "song" / f"{name}.wav")[0], before[name])


def test_a_previous_separation_is_replaced_and_said_so(tmp_path):
    model, info = unittest_model()
    path = noise_file(tmp_path / "song.wav", 1.0, 8000, 1)
    out, log = tmp_path / "out", []
    separate_file(model, info, path, out, chunk_seconds=0.5, show_progress=False, log=log.append)
    assert log == []
    manifest = json.loads((out / "song" / SEPARATION_MANIFEST).read_text())
    assert manifest["format"] == "sepray-separation" and manifest["input"] == str(path.resolve())
    assert manifest["files"] == sorted(f"{s}.wav" for s in SOURCES)
    (out / "song" / "vocals.wav").unlink()  # a subset of what it wrote is still its own folder
    separate_file(model, info, path, out, chunk_seconds=0.5, show_progress=False, log=log.append)
    assert log == [f"replacing the previous separation in {out / 'song'}"]
    assert sorted(p.name for p in out.iterdir()) == ["song"]
    assert (out / "song" / "vocals.wav").is_file()


def _user_file(target: Path) -> Path:
    target.write_bytes(b"my own file")
    return target


def _plain_folder(target: Path) -> Path:
    target.mkdir()
    return _user_file(target / "vocals.wav")


def _separation_plus_a_user_file(target: Path) -> Path:
    model, info = unittest_model()
    song = noise_file(target.parent / f"{target.name}.wav", 0.5, 8000, 1)
    separate_file(model, info, song, target.parent, chunk_seconds=0.5, show_progress=False)
    return _user_file(target / "notes.txt")


def _bad_manifest(target: Path) -> Path:
    target.mkdir()
    (target / SEPARATION_MANIFEST).write_text('{"format": "something else", "files": ["mine.txt"]}')
    return _user_file(target / "mine.txt")


@pytest.mark.parametrize(
    "make, needle",
    [
        (_user_file, "exists and is not a folder written by sepray separate"),
        (_plain_folder, f"folder was not written by sepray separate (no {SEPARATION_MANIFEST})"),
        (_separation_plus_a_user_file, "holds files sepray separate did not write (notes.txt)"),
        (_bad_manifest, f"(no {SEPARATION_MANIFEST})"),
    ],
)
def test_separate_never_removes_what_it_did_not_write(tmp_path, make, needle):
    model, info = unittest_model()
    out = tmp_path / "out"
    out.mkdir()
    kept = make(out / "song")
    before = sorted(out.rglob("*"))
    path = noise_file(tmp_path / "song.wav", 0.5, 8000, 1)
    with pytest.raises(UserError) as exc:
        separate_file(model, info, path, out, chunk_seconds=0.5, show_progress=False)
    assert str(out / "song") in str(exc.value) and needle in str(exc.value) and "\n" not in str(exc.value)
    assert kept.read_bytes() == b"my own file" and sorted(out.rglob("*")) == before


def test_separate_never_removes_its_input(tmp_path):
    """`sepray separate out/x/good -o out/x`: the output folder would be the input file itself."""
    model, info = unittest_model()
    folder = tmp_path / "out" / "x"
    folder.mkdir(parents=True)
    good = folder / "good"
    good.write_bytes(noise_file(tmp_path / "song.wav", 0.5, 8000, 1).read_bytes())
    with pytest.raises(UserError, match="is the input file itself"):
        separate_file(model, info, good, folder, chunk_seconds=0.5, show_progress=False)
    assert good.read_bytes() == (tmp_path / "song.wav").read_bytes()
    inside = tmp_path / "out" / "song" / "song.wav"  # an input inside the folder it would be written to
    inside.parent.mkdir()
    inside.write_bytes(good.read_bytes())
    with pytest.raises(UserError, match="holds the input"):
        separate_file(model, info, inside, tmp_path / "out", chunk_seconds=0.5, show_progress=False)
    assert inside.read_bytes() == good.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["song", "x"]


def test_a_file_put_at_the_output_during_separation_survives(tmp_path, monkeypatch):
    """The check is made again just before the finished folder is renamed into place."""
    model, info = unittest_model()
    path = noise_file(tmp_path / "song.wav", 2.0, 8000, 1)
    out = tmp_path / "out"
    real_forward = model.forward

    def user_writes_meanwhile(x):
        if not (out / "song").exists():
            _user_file(out / "song")
        return real_forward(x)

    monkeypatch.setattr(model, "forward", user_writes_meanwhile)
    with pytest.raises(UserError, match="not a folder written by sepray separate"):
        separate_file(model, info, path, out, chunk_seconds=0.5, show_progress=False)
    assert (out / "song").read_bytes() == b"my own file"
    assert sorted(p.name for p in out.iterdir()) == ["song"]  # no temporary folder left


def test_atomic_folder_keeps_what_may_replace_refuses(tmp_path):
    target = _user_file(tmp_path / "target")

    def refuse(path: Path) -> None:
        raise ValueError(f"{path}: not mine")

    with pytest.raises(ValueError, match="not mine"), folder_written_atomically(target, refuse) as tmp:
        (tmp / "a.txt").write_text("new")
    assert target.read_bytes() == b"my own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_and_nothing_is_written(tmp_path, bad):
    """A float WAV with NaN/Inf samples: a one-line error naming the file and the first bad sample's time,
    raised as the stream reaches it (after blocks before it were written), and no output folder remains."""
    model, info = unittest_model()
    rate = 11025
    path = noise_file(tmp_path / "song.wav", 6.0, rate, 2)
    audio, _ = sf.read(str(path), dtype="float32", always_2d=True)
    audio[round(4.5 * rate), 1] = bad
    audio[round(5.0 * rate), 0] = np.nan
    sf.write(str(path), audio, rate, subtype="FLOAT")
    out = tmp_path / "out" / "deeper"
    with pytest.raises(AudioError) as exc:
        separate_file(model, info, path, out, chunk_seconds=1.0, show_progress=False)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: NaN or infinite sample at 4.500 s")
    assert not (tmp_path / "out").exists()  # neither the song folder nor the -o folders it made
    with pytest.raises(AudioError, match="at 4.500 s"):
        read_audio(path)


MEMORY_PROBE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    import torch
    from tests.test_streaming import unittest_model
    from sepray.separate import separate_file

    torch.set_num_threads(1)
    model, info = unittest_model()
    long_song, short_song, out = map(Path, sys.argv[1:4])
    separate_file(model, info, short_song, out, chunk_seconds=2.0, show_progress=False)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    separate_file(model, info, long_song, out, chunk_seconds=2.0, show_progress=False)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """
)


def long_file_peak_growth(folder: Path, probe: str, rate: int = 16000, seconds: int = 600) -> tuple[int, int]:
    """Write ``long.wav`` (``seconds`` of noise, never held whole) and a 30 s ``short.wav`` in ``folder``, run
    ``probe`` (a script: warm up on the short file, separate the long one into ``folder/out``, print the peak
    RSS growth in bytes) in a fresh process -> (peak RSS growth in bytes, the long song's decoded size)."""
    rng = np.random.default_rng(0)
    for name, length in (("long", seconds), ("short", 30)):
        with sf.SoundFile(str(folder / f"{name}.wav"), "w", rate, 1, subtype="PCM_16") as f:
            for _ in range(length // 10):  # never holds the song
                f.write((rng.standard_normal(10 * rate) * 0.1).astype(np.float32))
    proc = subprocess.run(
        [sys.executable, "-c", probe, *(str(folder / n) for n in ("long.wav", "short.wav", "out"))],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = sf.info(str(folder / "out" / "long" / "vocals.wav"))
    assert (info.samplerate, info.channels, info.frames) == (rate, 1, seconds * rate)
    return int(proc.stdout.strip().splitlines()[-1]), seconds * rate * 4


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB only on Linux")
def test_memory_stays_bounded_on_a_long_file(tmp_path):
    """10 minutes of 16 kHz mono (38 MB decoded as float32): the peak RSS grows by a small fraction of that.

    Separating it in memory grows the peak by ~320 MB (decoded song, resampled copies, estimates).
    """
    growth, decoded = long_file_peak_growth(tmp_path, MEMORY_PROBE)
    assert growth < decoded / 4, f"peak RSS grew by {growth / 1e6:.1f} MB for a {decoded / 1e6:.0f} MB song"


def test_full_band_output_keeps_the_band_above_the_model_rate(tmp_path):
    """A 44.1 kHz song through an 8 kHz model: the mixture's content above 4 kHz goes to the accompaniment,
    none to the vocals, and (a 'difference' output sums to its input) the estimates sum to the mixture."""
    model, info = unittest_model("model.output=difference")
    rate, seconds = 44100, 3.0
    t = torch.arange(round(rate * seconds)) / rate
    torch.manual_seed(0)
    low = 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * dsp.resample(torch.randn(8000 * 3), 8000, rate)
    high = 0.2 * torch.sin(2 * torch.pi * 12000 * t)
    mix = (low + high)[None].repeat(2, 1)  # (2, T)
    path = tmp_path / "song.wav"
    sf.write(str(path), mix.T.numpy(), rate, subtype="FLOAT")
    est = separate_song(model, mix, rate, info.sample_rate, chunk_seconds=1.0)

    def high_band_energy(x: torch.Tensor) -> float:  # above 5 kHz, one channel
        spec = torch.fft.rfft(x[0].double()).abs() ** 2
        return float(spec[torch.fft.rfftfreq(x.shape[-1], 1 / rate) > 5000].sum())

    top = high_band_energy(mix)
    assert high_band_energy(est["vocals"]) < 1e-4 * top
    assert abs(high_band_energy(est["accompaniment"]) / top - 1) < 0.01
    assert torch.allclose(est["vocals"] + est["accompaniment"], mix, atol=1e-5)
    folder = separate_file(model, info, path, tmp_path / "out", chunk_seconds=1.0, show_progress=False)
    got = {name: read_audio(folder / f"{name}.wav")[0] for name in SOURCES}
    assert (got["vocals"] + got["accompaniment"] - mix).abs().max() < 2e-4  # PCM_16 rounding, twice


def _every_family():
    """(label, model, PackageInfo) for each model family (and head / decoder variant) at 8 kHz; spec-unet-small
    keeps its real STFT geometry (n_fft 512, hop 128: shortest input 384 samples)."""
    cases = {key: TINY[key] for key in TINY}
    cases["structure_a"] = ("structure_a", TINY_STRUCTURE_A)
    cases["umt"] = ("umt", TINY_UMT)
    cases["umt-autoregressive"] = ("umt", {**TINY_UMT, "decoder": "autoregressive"})
    preset = load_config("spec-unet-small")
    cases["spec-unet-small"] = (preset.model_name, {**preset.model, "audio_channels": 1})
    for label, (name, cfg) in cases.items():
        torch.manual_seed(0)
        model = build_model(name, {**cfg, "audio_channels": 1})
        yield label, model, PackageInfo(name, dict(model.config.__dict__), 8000, 1, tuple(model.sources))


@pytest.mark.parametrize("frames, rate", [(1, 16000), (80, 8000)])
def test_a_song_of_one_sample_or_ten_ms_separates_with_every_model_family(tmp_path, frames, rate):
    """`sepray separate` of a 1-sample or 0.01 s WAV used to end in `ValueError ... must be a multiple of hop
    128` (STFT models); the song is zero-padded to the model's shortest input and cut back to its length."""
    path = noise_file(tmp_path / "short.wav", frames / rate, rate, 2)
    mix, _ = read_audio(path)
    for label, model, info in _every_family():
        out = tmp_path / label
        folder = separate_file(model, info, path, out, chunk_seconds=0.05, show_progress=False)
        got = {name: read_audio(folder / f"{name}.wav") for name in SOURCES}
        for name, (audio, got_rate) in got.items():
            assert (got_rate, *audio.shape) == (rate, 2, frames), (label, name)
        if (
            model.sources == ("vocals", "accompaniment")
            and getattr(model.config, "output", "") == "difference"
        ):
            total = got["vocals"][0] + got["accompaniment"][0]
            assert torch.allclose(total, mix, atol=1e-4), label


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("length", [1, 47])
def test_chunked_equals_one_shot_below_the_shortest_input(key, length):
    _, model = tiny(key)
    mix = torch.randn(1, 1, length) * 0.3
    whole = run_whole(model, mix)
    chunked = run_chunked(model, mix, chunk=16)
    assert chunked.shape == whole.shape == (1, len(model.sources), 1, length)
    assert torch.allclose(chunked, whole, atol=1e-5), (chunked - whole).abs().max()


@pytest.mark.parametrize("family", ["waveunet-difference", "spec_unet"])
def test_a_float_song_beyond_full_scale_is_not_clipped_and_still_sums_to_the_mixture(tmp_path, family):
    """A float WAV peaking at 4.0 used to give a third of the accompaniment clipped at 1.0 (every model clamps
    its estimates to [-1, 1]) and estimates that no longer summed to the mixture: it is now separated at 1/4 of
    its level and scaled back, written as float, and stderr says so."""
    if family == "spec_unet":
        _, model = tiny("spec_unet")
        info = PackageInfo("spec_unet", dict(model.config.__dict__), 8000, 1, tuple(SOURCES))
    else:
        model, info = unittest_model("model.output=difference")
    rate = 8000
    t = torch.arange(3 * rate) / rate
    mix = torch.stack([torch.sin(2 * torch.pi * 220 * t), torch.sin(2 * torch.pi * 330 * t + 1)])
    mix = 4.0 * mix * torch.linspace(0.2, 1.0, mix.shape[-1])  # (2, T), peaks at 4.0 at the end
    path = tmp_path / "loud.wav"
    sf.write(str(path), mix.T.numpy(), rate, subtype="FLOAT")
    log: list[str] = []
    folder = separate_file(
        model, info, path, tmp_path / "out", chunk_seconds=0.5, show_progress=False, log=log.append
    )
    assert log == [
        f"{path}: peaks at 4.00, beyond full scale: separated at 1/4.00 of its level and scaled back "
        "(32-bit float WAVs, nothing clipped)"
    ]
    got = {name: read_audio(folder / f"{name}.wav")[0] for name in SOURCES}
    assert {sf.info(str(folder / f"{name}.wav")).subtype for name in SOURCES} == {"FLOAT"}
    assert (got["vocals"] + got["accompaniment"] - mix).abs().max() < 1e-4
    loudest = max(float(got[name].abs().max()) for name in SOURCES)
    assert loudest > 1.5  # not clipped at full scale
    for name in SOURCES:  # a clamp leaves runs of samples at exactly full scale
        assert int((got[name].abs() == 1.0).sum()) <= 2, name
    manifest = json.loads((folder / SEPARATION_MANIFEST).read_text())
    assert manifest["subtype"] == "FLOAT"


def test_a_pcm_song_whose_estimate_exceeds_full_scale_switches_to_float_keeping_what_was_written(
    tmp_path, monkeypatch
):
    """A 16-bit input is written as 16-bit, until an estimate would clip: then every file continues as float,
    with the part already written copied over, and the estimates still sum to the mixture."""
    model, info = unittest_model("model.output=difference")
    rate = 8000
    t = torch.arange(4 * rate) / rate
    mix = torch.sin(2 * torch.pi * 200 * t)[None] * torch.where(t < 2.0, 0.05, 0.8)  # (1, T): loud from 2 s
    path = tmp_path / "song.wav"
    sf.write(str(path), mix.T.numpy(), rate, subtype="PCM_16")
    mix, _ = read_audio(path)  # as 16-bit holds it
    real_forward = model.forward

    def move_the_mixture_between_sources(x):  # vocals - 1.5 mix, accompaniment + 1.5 mix: same sum
        y = real_forward(x)  # (B, S, C, T): accompaniment = centre of x - vocals
        total = y.sum(dim=1, keepdim=True)
        return y + 1.5 * total * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)

    monkeypatch.setattr(model, "forward", move_the_mixture_between_sources)
    log: list[str] = []
    folder = separate_file(
        model, info, path, tmp_path / "out", chunk_seconds=0.5, show_progress=False, log=log.append
    )
    assert len(log) == 1 and log[0].startswith(f"{path}: an estimate peaks at ")
    assert log[0].endswith(": written as 32-bit float WAVs")
    got = {name: read_audio(folder / f"{name}.wav")[0] for name in SOURCES}
    assert {sf.info(str(folder / f"{name}.wav")).subtype for name in SOURCES} == {"FLOAT"}
    assert got["accompaniment"].abs().max() > 1.5
    assert (got["vocals"] + got["accompaniment"] - mix).abs().max() < 1e-4  # the first 2 s were 16-bit
    quiet = got["accompaniment"][:, :rate]
    assert torch.equal(quiet, torch.round(quiet * 32768) / 32768)  # written as 16-bit, copied exactly
