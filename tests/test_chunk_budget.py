"""Chunk length from a memory budget (``sepray separate`` without ``--chunk-seconds``)."""

from __future__ import annotations

import pytest
import torch

from sepray.chunk_budget import (
    MARGIN,
    OVERHEAD,
    LiveTensorBytes,
    auto_chunk_seconds,
    call_peak_bytes,
    default_max_memory,
    parse_memory,
)
from sepray.cli import build_parser
from sepray.separate import run_whole, separate_tensor
from tests.test_package_and_separate import TINY, tiny


@pytest.mark.parametrize(
    ("text", "size"),
    [("2G", 2 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("64kb", 65536), ("1000", 1000)],
)
def test_parse_memory(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "2X", "two gigabytes"])
def test_parse_memory_rejects(text):
    with pytest.raises(ValueError, match="memory size"):
        parse_memory(text)


def test_cli_options():
    parser = build_parser()
    args = parser.parse_args(["separate", "--run-id", "r", "song.wav"])
    assert args.chunk_seconds is None and args.max_memory is None  # auto
    args = parser.parse_args(["separate", "--run-id", "r", "song.wav", "--max-memory", "512M"])
    assert args.max_memory == 512 * 2**20
    with pytest.raises(SystemExit):
        parser.parse_args(["separate", "--run-id", "r", "song.wav", "--max-memory", "lots"])


def test_default_budget_is_capped_and_positive():
    assert 0 < default_max_memory() <= 2 * 2**30


def test_live_tensor_bytes_counts_lifetimes():
    with LiveTensorBytes() as meter:
        a = torch.zeros(1000)  # 4 kB
        b = torch.zeros(2000)  # 8 kB, both alive: 12 kB
        del a, b
        c = torch.zeros(500)
        c.add_(1.0)  # in place: no new storage
        view = c[:10]
        del c, view
    assert meter.peak == 12000 and meter.live == 0


def test_peak_grows_linearly_with_the_chunk():
    _, model = tiny("wavenet-mulaw")
    peaks = [call_peak_bytes(model, n) for n in (1000, 2000, 3000)]
    assert peaks[0] < peaks[1] < peaks[2]
    assert abs((peaks[2] - peaks[1]) - (peaks[1] - peaks[0])) <= 0.05 * (peaks[1] - peaks[0])


@pytest.mark.parametrize("key", sorted(TINY))
def test_auto_chunk_fits_the_budget_and_separates_exactly(key):
    _, model = tiny(key)
    rate = 8000
    big = auto_chunk_seconds(model, rate, 2**40)
    assert big == 30.0  # capped
    floor = auto_chunk_seconds(model, rate, 1)
    assert floor * rate >= max(model.step, model.receptive_field)  # never shorter than useful
    budget = 2 * call_peak_bytes(model, 4 * round(floor * rate)) * MARGIN + OVERHEAD  # stereo: batch of 2
    seconds = auto_chunk_seconds(model, rate, budget)
    assert floor <= seconds < big
    chunk = round(seconds * rate)
    assert 2 * call_peak_bytes(model, chunk) * MARGIN + OVERHEAD <= budget * 1.02
    mix = torch.rand(2, 3 * chunk + 17) - 0.5
    out = separate_tensor(model, mix, seconds, rate)
    whole = run_whole(model, mix.unsqueeze(1))  # (C, S, 1, T)
    for i, name in enumerate(model.sources):
        assert torch.allclose(out[name], whole[:, i, 0], atol=1e-5), name
