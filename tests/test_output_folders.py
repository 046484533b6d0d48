"""What sepray may replace or remove in a user's folders: `sepray report --out` replaces only a report it copied
there (or an empty folder); a separation killed mid-song leaves a temporary folder that a later run removes,
while a live separation's folder (another process writing into the same OUT) and the user's own are kept.
Real files and real processes (SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepray.errors import UserPathError
from sepray.output_folders import PARTIAL_MARK, SEPARATION_MANIFEST, remove_stale_partials
from sepray.sweep.report import REPORT_FOLDER, check_report_out, copy_report

REPO = Path(__file__).resolve().parents[1]


def _built_report(folder: Path, text: str = "new") -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "index.html").write_text(f"<html>{text}</html>")
    (folder / "inline.html").write_text(f"<html>{text} inline</html>")
    (folder / "images" / "curves.png").write_bytes(b"png")
    return folder


def test_report_out_replaces_only_a_report_it_copied(tmp_path):
    built = _built_report(tmp_path / "built")
    out = tmp_path / "report"
    assert check_report_out(out) is False
    copy_report(built, out, "a" * 32)
    manifest = json.loads((out / REPORT_FOLDER.manifest).read_text())
    assert manifest["format"] == "sepray-report" and manifest["parent_run_id"] == "a" * 32
    assert manifest["files"] == ["images/curves.png", "index.html", "inline.html"]
    (built / "index.html").write_text("<html>newer</html>")
    assert check_report_out(out) is True
    copy_report(built, out, "a" * 32)  # its own copy: replaced
    assert (out / "index.html").read_text() == "<html>newer</html>"
    empty = tmp_path / "empty"
    empty.mkdir()
    copy_report(built, empty, "a" * 32)  # an empty folder holds nothing to lose
    assert (empty / "inline.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built", "empty", "report"]  # no temporary left


def _users_site(out: Path) -> Path:
    out.mkdir()
    (out / "index.html").write_text("my own site")
    return out / "index.html"


def _report_plus_notes(out: Path) -> Path:
    copy_report(_built_report(out.parent / "built"), out, "b" * 32)
    (out / "images" / "notes.txt").write_text("my own site")
    return out / "images" / "notes.txt"


def _a_file(out: Path) -> Path:
    out.write_text("my own site")
    return out


@pytest.mark.parametrize(
    "make, needle",
    [
        (_users_site, "folder was not written by sepray report (no .sepray-report.json)"),
        (_report_plus_notes, "holds files sepray report did not write (images/notes.txt)"),
        (_a_file, "exists and is not a folder written by sepray report"),
    ],
)
def test_report_out_never_overwrites_what_sepray_did_not_write(tmp_path, make, needle):
    out = tmp_path / "out"
    kept = make(out)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UserPathError) as exc:
        copy_report(_built_report(tmp_path / "new"), out, "c" * 32)
    message = str(exc.value)
    assert message.startswith(f"{out}: ") and needle in message and "\n" not in message
    assert "choose another --out folder" in message
    assert kept.read_text() == "my own site"
    assert sorted(p for p in tmp_path.rglob("*") if "new" not in p.parts) == before


SLOW_SEPARATION = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from sepray import SOURCES
    from sepray.config import load_config
    from sepray.models import build_model
    from sepray.package import PackageInfo
    from sepray.separate import separate_file

    cfg = load_config("unittest")
    model = build_model(cfg.model_name, cfg.model)
    info = PackageInfo(cfg.model_name, cfg.model, cfg.data.sample_rate, 1, tuple(SOURCES))
    real_forward = model.forward

    def slow(x):
        time.sleep(float(sys.argv[3]))
        return real_forward(x)

    model.forward = slow
    separate_file(model, info, Path(sys.argv[1]), Path(sys.argv[2]), chunk_seconds=0.25, show_progress=False)
    """
)


def _song(path: Path, seconds: float) -> Path:
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, round(seconds * 8000)).astype(np.float32)
    sf.write(str(path), audio, 8000, subtype="PCM_16")
    return path


def _start(song: Path, out: Path, sleep: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_SEPARATION, str(song), str(out), str(sleep)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_partial(
    out: Path, song: str, proc: subprocess.Popen, timeout: float = 120, other_than: Path | None = None
) -> Path:
    """The temporary folder of ``song`` (not ``other_than``) once it holds the lock mark and a partial WAV."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for folder in set(out.glob(f".tmp-{song}-*")) - {other_than}:
            wavs = [p for p in folder.glob(".tmp-*.wav") if p.stat().st_size > 44]  # past the WAV header
            if (folder / PARTIAL_MARK).is_file() and wavs:
                return folder
        if proc.poll() is not None:
            raise AssertionError(
                f"the separation ended first ({proc.returncode}): {proc.stderr.read()[-2000:]}"
            )
        time.sleep(0.02)
    raise AssertionError(f"no partial separation of {song} in {out} after {timeout} s")


def test_a_killed_separations_folder_is_removed_and_a_live_ones_is_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / ".tmp-my-notes"  # the user's own, no mark: never touched
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    killed = _start(_song(tmp_path / "killed.wav", 2.0), out, 0.3)
    live = _start(_song(tmp_path / "live.wav", 2.0), out, 0.3)
    try:
        stale = wait_for_partial(out, "killed", killed)
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(timeout=30) == -signal.SIGKILL
        running = wait_for_partial(out, "live", live)
        log: list[str] = []
        assert remove_stale_partials(out, log.append) == [stale]
        assert not stale.exists() and running.is_dir() and (mine / "notes.txt").read_text() == "keep"
        assert log == [
            f"removed {stale}: a partial separation left by process {killed.pid} on {os.uname().nodename} "
            f"(started {log[0].split('(started ')[1]}"
        ]
        assert live.wait(timeout=120) == 0, live.stderr.read()[-2000:]
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sorted(p.name for p in out.iterdir()) == [".tmp-my-notes", "live"]
    assert (out / "live" / SEPARATION_MANIFEST).is_file()
    assert sorted(p.name for p in (out / "live").iterdir()) == sorted(
        [SEPARATION_MANIFEST, "accompaniment.wav", "vocals.wav"]
    )
