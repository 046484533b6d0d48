"""What the driver reads from a failed trial (which disk is full, the error's own line), and the Ray token a local
sweep creates (owner-only, in a HOME of the test's own: the user's ~/.ray is never touched)."""

from __future__ import annotations

import stat

import pytest

from sepray.sweep.raytune.cluster import create_local_token
from sepray.sweep.raytune.faults import STORAGE_FULL, error_line, full_reason

STORAGE_TRACEBACK = f"""Failure # 1 (occurred at 2026-12-03_08-06-31)
ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1, actor_id=ab, repr=train_trial)
  File "pyarrow/error.pxi", line 92, in pyarrow.lib.check_status
OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/x/sepray/sweep/raytune/tuner.py", line 70, in report
sepray.sweep.raytune.faults.StorageFullError: {STORAGE_FULL}: the checkpoint of epoch 1 was not saved (Error writing bytes)
"""
STORE_TRACEBACK = """Traceback (most recent call last):
sqlite3.OperationalError: database or disk is full
[SQL: INSERT INTO metrics ("key", value) VALUES (?, ?)]
sepray.tracking_store.TrackingError: the MLflow tracking store /data/mlflow.db is full (database or disk is full)
"""


def test_a_full_ray_storage_is_named_with_its_path():
    reason = full_reason(STORAGE_TRACEBACK, "/data/ray_results", "abc123")
    assert reason.startswith(
        "the sweep's Ray storage /data/ray_results is full: trial abc123: the checkpoint of epoch 1 was not saved"
    )
    assert reason.endswith("free space there, then continue the sweep with the same command and --resume")
    assert "\n" not in reason


def test_a_full_tracking_store_is_named_as_sepray_tracking_names_it():
    reason = full_reason(STORE_TRACEBACK, "/data/ray_results", "abc123")
    assert reason.startswith(
        "the MLflow tracking store /data/mlflow.db is full (database or disk is full): trial abc123 could not log"
    )


def test_another_full_disk_and_other_errors():
    text = "Traceback (most recent call last):\nOSError: [Errno 28] No space left on device: '/tmp/x'\n"
    assert full_reason(text, "/s", "t1").startswith(
        "a disk is full under trial t1 (OSError: [Errno 28] No space left on device: '/tmp/x')"
    )
    diverged = "Traceback (most recent call last):\nFloatingPointError: training diverged: loss is nan\n"
    assert full_reason(diverged, "/s", "t1") is None
    assert error_line(diverged) == "FloatingPointError: training diverged: loss is nan"
    assert error_line(STORAGE_TRACEBACK).startswith(f"StorageFullError: {STORAGE_FULL}: the checkpoint")
    assert error_line(STORE_TRACEBACK).startswith("TrackingError: the MLflow tracking store /data/mlflow.db")


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_local_ray_token_is_created_owner_only(home):
    path = create_local_token()
    assert path == home / ".ray" / "auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0  # a new ~/.ray is the owner's only
    token = path.read_text()
    assert len(token) == 64 and set(token) <= set("0123456789abcdef")  # Ray's format: 256 bits in hex
    assert create_local_token() is None  # it exists now: left as it is


def test_a_token_that_exists_or_is_not_wanted_is_left_alone(home, monkeypatch):
    mine = home / ".ray" / "auth_token"
    mine.parent.mkdir()
    mine.write_text("my own token")
    mine.chmod(0o640)
    assert create_local_token() is None
    assert mine.read_text() == "my own token" and stat.S_IMODE(mine.stat().st_mode) == 0o640
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(home / "elsewhere" / "token"))
    assert create_local_token() == home / "elsewhere" / "token"  # where Ray will read it
    assert stat.S_IMODE((home / "elsewhere" / "token").stat().st_mode) == 0o600
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    mine.unlink()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert create_local_token() is None and not mine.exists()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "given")
    assert create_local_token() is None and not mine.exists()
