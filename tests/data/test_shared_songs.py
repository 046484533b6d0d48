"""Songs in memory are memory-mapped views of the decoded cache (one copy per node, shared by every process that
loads them), sums of several files included; nothing sepray does with a song writes into it; training draws the
same numbers as with songs read into memory."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sepray import audio
from sepray.config import AugmentConfig, DataConfig, resolve
from sepray.data import CropSampler, cache, clear_memo, fixed_crops, load_splits
from sepray.evaluate import evaluate_songs
from sepray.models import build_model
from sepray.train import Trainer
from tests.data.fixtures import mir1k_folder

SR = 8000
STEMS = ("mixture", "vocals", "drums", "bass", "other")


def musdb_root(root: Path, songs: int = 4, seconds: float = 1.5) -> Path:
    """A MUSDB18-HQ-layout folder: train/ and test/ of tracks with five stereo stems of noise."""
    g = torch.Generator().manual_seed(0)
    for i in range(songs):
        subset = "test" if i == songs - 1 else "train"
        for stem in STEMS:
            x = 0.2 * torch.rand(2, int(seconds * SR) + 37 * i, generator=g) - 0.1
            audio.write_audio(root / subset / f"track-{i}" / f"{stem}.wav", x, SR, subtype="FLOAT")
    return root


def file_mappings(under: Path) -> tuple[list[tuple[int, int, str]], dict[str, dict[str, int]]]:
    """This process's mappings of files under ``under``: (start, end, path) ranges, and per file the summed
    /proc/self/smaps fields in kB (Rss, Private_Dirty, ...)."""
    ranges, fields = [], {}
    current = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
        if head:
            path = head.group(3)
            current = path if path.startswith(str(under)) else None
            if current:
                ranges.append((int(head.group(1), 16), int(head.group(2), 16), path))
                fields.setdefault(path, {})
        elif current:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[current][key] = fields[current].get(key, 0) + int(value.split()[0])
    return ranges, fields


def mapped_file(x: torch.Tensor, ranges) -> str | None:
    ptr = x.data_ptr()
    return next((path for start, end, path in ranges if start <= ptr < end), None)


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_memo()
    yield
    clear_memo()


def test_every_song_tensor_is_a_view_of_the_cache_sums_included(tmp_path):
    root = musdb_root(tmp_path / "musdb")
    cfg = DataConfig(path=str(root), cache_dir=str(tmp_path / "cache"), sample_rate=SR, channels=2)
    first = load_splits(cfg)  # decodes, caches, then maps what it wrote
    clear_memo()
    second = load_splits(cfg)  # maps the cache
    ranges, _ = file_mappings(tmp_path / "cache")
    for splits in (first, second):
        songs = [s for split in splits.values() for s in split]
        assert len(songs) == 4
        for song in songs:
            for name, x in {"mix": song.mix, **song.sources}.items():
                assert mapped_file(x, ranges) is not None, f"{song.name} {name} is not memory-mapped"
    # the values are the files' (accompaniment = drums + bass + other, summed in float32 in that order)
    song = next(s for s in second["test"])
    folder = root / "test" / song.name
    stems = {stem: audio.read_audio(folder / f"{stem}.wav")[0].numpy() for stem in STEMS}
    accompaniment = stems["drums"].copy()
    accompaniment += stems["bass"]
    accompaniment += stems["other"]
    assert np.array_equal(song.sources["accompaniment"].numpy(), accompaniment)
    assert np.array_equal(song.mix.numpy(), stems["mixture"])
    assert np.array_equal(song.sources["vocals"].numpy(), stems["vocals"])


def test_nothing_sepray_does_with_a_song_writes_into_it(tmp_path):
    root = mir1k_folder(tmp_path / "clips", {"a": {1: 3}, "b": {1: 3}}, seconds=1.0, sr=SR)
    cfg = DataConfig(path=str(root), cache_dir=str(tmp_path / "cache"), sample_rate=SR, channels=1)
    load_splits(cfg)
    clear_memo()
    songs = load_splits(cfg, ("train", "valid", "test"))
    every = [s for split in songs.values() for s in split]
    before = {(s.name, k): x.clone() for s in every for k, x in {"mix": s.mix, **s.sources}.items()}
    # every augmentation the sampler has: gains, pitch shift of the sources or of the input only, remix
    for pitch_target in ("both", "input"):
        augment = AugmentConfig(pitch_shift_prob=1.0, pitch_target=pitch_target, remix_prob=0.5)
        sampler = CropSampler(every, 2000, 1000, ("vocals", "accompaniment"), augment, SR, seed=1)
        for _ in range(4):
            sampler.batch(4)
    fixed_crops(every, 2000, 1000, ("vocals", "accompaniment"), 6, seed=2)
    tiny = resolve({"model": {"name": "stft_mask", "n_fft": 128, "hop": 32}, "data": {"sample_rate": SR}})
    model = build_model(tiny.model_name, tiny.model)
    # full songs through chunked separation, scored both ways
    evaluate_songs(model, every[:2], SR, torch.device("cpu"), 0.5, metric="bss_eval_v3")

    _, fields = file_mappings(tmp_path / "cache")
    assert fields, "the songs are not memory-mapped"
    dirty = {path: f["Private_Dirty"] for path, f in fields.items() if f.get("Private_Dirty")}
    assert not dirty, f"pages of the cache made private (written into): {dirty}"
    for s in every:
        for k, x in {"mix": s.mix, **s.sources}.items():
            assert torch.equal(x, before[(s.name, k)])

    # the check above can fail: a write into a song's tensor makes that page private, the file stays as it was
    song = every[0]
    ranges, _ = file_mappings(tmp_path / "cache")
    path = mapped_file(song.sources["vocals"], ranges)
    on_disk = np.load(path).copy()
    song.sources["vocals"][0, 0] += 1.0
    _, fields = file_mappings(tmp_path / "cache")
    assert fields[path]["Private_Dirty"] > 0
    assert np.array_equal(np.load(path), on_disk)


def test_training_draws_the_same_numbers_from_mapped_and_in_memory_songs(tmp_path, monkeypatch):
    root = mir1k_folder(tmp_path / "clips", {"a": {1: 4}, "b": {1: 2}}, seconds=1.0, sr=SR)
    raw = {
        "data": {"path": str(root), "cache_dir": str(tmp_path / "cache"), "sample_rate": SR, "valid_fraction": 0.3},
        "model": {"name": "stft_mask", "n_fft": 128, "hop": 32},
        "train": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "segment_seconds": 0.25, "threads": 1,
                  "valid_crops": 2, "valid_seconds": 0.5},
    }  # fmt: skip
    losses = {}
    for mode in ("c", None):
        monkeypatch.setattr(cache, "MMAP_MODE", mode)
        clear_memo()
        trainer = Trainer(resolve(raw))
        mapped = file_mappings(tmp_path / "cache")[1]
        assert bool(mapped) == (mode is not None)
        losses[mode] = [trainer.train_epoch()["train_loss"], trainer.validate()["valid_loss"]]
        del trainer
    assert losses["c"] == losses[None]
