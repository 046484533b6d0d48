"""benchmarks/gpu_check.py's CPU side: one line and exit 2 without CUDA, its arguments, the table, a check that
fails without stopping the others, pytest's summary, and the configurations its AMP check trains."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = check  # its dataclasses look their module up
_spec.loader.exec_module(check)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has CUDA: the script runs its checks here"
)
def test_without_cuda_it_says_so_in_one_line_and_exits_2():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2, out
    assert len(out.splitlines()) == 1 and out.startswith("gpu_check: CUDA is not available on this machine")
    assert out.endswith("nothing checked")


def test_arguments(capsys):
    args = check.parse_args(["--skip", "amp,tests", "--quick"])
    assert args.checks == ["sweep", "generation"] and (args.steps, args.samples) == (10, 300)
    args = check.parse_args([])
    assert args.checks == list(check.CHECKS) and args.steps == 40 and args.json is None and args.budget == 570
    with pytest.raises(SystemExit) as info:
        check.parse_args(["--skip", "amp,nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err == "gpu_check: error: --skip nope: unknown check; expected some of tests,sweep,amp,generation\n"
    )
    with pytest.raises(SystemExit):
        check.parse_args(["--budget", "0"])
    assert capsys.readouterr().err == "gpu_check: error: --budget 0: expected a number of seconds > 0\n"


def test_a_failing_check_is_a_row_and_the_others_still_run():
    ran = []

    def good(left):
        ran.append(("good", left))
        return [check.Row("good", "ok", "1.0 steps/s")]

    def bad(left):
        raise RuntimeError("CUDA error: an illegal memory access\nmore detail")

    def slow(left):
        time.sleep(0.3)
        return [check.Row("slow", "ok", "done")]

    rows = check.run_checks(["bad", "good"], {"bad": bad, "good": good}, budget=60)
    assert [name for name, _ in ran] == ["good"] and 0 < ran[0][1] <= 60  # it got the seconds left
    assert rows == [
        check.Row("bad", "FAILED", "RuntimeError: CUDA error: an illegal memory access"),
        check.Row("good", "ok", "1.0 steps/s"),
    ]
    # the budget: a check is not started once it is spent
    assert check.run_checks(["slow", "good"], {"slow": slow, "good": good}, budget=0.2) == [
        check.Row("slow", "ok", "done"),
        check.Row("good", "not run", "the 0 s budget was spent"),
    ]
    table = check.format_table(rows).splitlines()
    assert table[0].split() == ["check", "status", "figures"] and set(table[1]) == {"-"}
    # the columns line up: every row's figures start where the header's does
    column = table[0].index("figures")
    assert all(
        line[column:].startswith(text)
        for line, text in zip(table[2:], [r.figures for r in rows], strict=True)
    )


def test_pytest_summary_counts():
    out = "....s\nSKIPPED [1] tests/test_gpu.py:60: 1 CUDA device(s) visible\n5 passed, 1 skipped, 600 deselected in 9.1s"
    assert check.pytest_counts(out) == {"passed": 5, "skipped": 1, "deselected": 600}
    assert check.pytest_counts("= 1 failed, 2 passed, 1 error in 3.0s =") == {
        "failed": 1,
        "passed": 2,
        "error": 1,
    }
    assert check.pytest_counts("no tests ran") == {}


def test_the_amp_check_trains_the_shipped_specs_gpu_sizes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # found from any working directory
    cases = check.amp_cases()
    unet, wavenet, quick, musdb = cases.values()
    assert unet.model_name == "waveunet" and (unet.model["levels"], unet.model["channels"]) == (6, 24)
    assert (unet.data.sample_rate, unet.train.batch_size, unet.train.segment_seconds) == (16000, 8, 1.0)
    assert (
        wavenet.model_name == "wavenet" and wavenet.model["blocks"] == 3 and wavenet.model["head"] == "mulaw"
    )
    assert quick.model_name == "spec_unet" and quick.model["channels"] == 12
    assert (musdb.data.sample_rate, musdb.data.channels, musdb.data.augment.pitch_shift_prob) == (
        44100,
        2,
        0.5,
    )
    assert all(
        c.train.device == "auto" and c.train.amp and c.train.prefetch_batches == 2 for c in cases.values()
    )


def test_a_command_past_its_time_is_killed_with_its_children(tmp_path):
    """What the tests and the sweep run in: past the time limit the whole process group goes (a sweep's Ray
    processes would otherwise keep the GPU)."""
    pid_file = tmp_path / "child.pid"
    script = f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    started = time.time()
    with pytest.raises(subprocess.TimeoutExpired):
        check.run_bounded([sys.executable, "-c", script], timeout=3)
    assert time.time() - started < 30
    child = int(pid_file.read_text())
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(
        child
    )  # gone (or a zombie awaiting its parent)
    assert check.run_bounded([sys.executable, "-c", "print('hi')"], timeout=60).stdout == "hi\n"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except OSError:
        return "Z"
