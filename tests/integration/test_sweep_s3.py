"""A real smoke sweep whose data.path is an s3:// URI on a real S3 API server (moto's, on the loopback): the driver
joins a Ray node that has its own cache (as another machine would), hands the trials its AWS settings through
Ray's runtime_env, and the trials (real Ray workers) copy the dataset to their node once, then train on it. The
MLflow runs and the winner's package keep the URI. A bucket that does not exist is one line before anything
starts."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sepray import tracking
from sepray.data import remote
from sepray.data.synth import write_corpus
from tests.integration.token_cluster import free_port, ray_head_command, wait_for
from tests.procs import stop_group
from tests.s3_server import s3_server

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "sweeps" / "quickstart.yaml"
NAME = "quickstart-smoke"


def driver(work: Path, env: dict[str, str], *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "run.py"), str(SPEC), "--smoke-test", *args],
        cwd=work,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "PYTHONWARNINGS": "ignore", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    work = tmp_path_factory.mktemp("s3")
    # the smoke spec's own synthetic corpus (6 songs of 6 s), as a CCMixter folder in a bucket
    write_corpus(work / "corpus", songs=6, seconds=6.0, seed=0, sample_rate=16000)
    with s3_server(work) as server:
        server.uri = server.upload(work / "corpus", "sepray-data", "corpora/synthetic")
        server.files = sum(1 for p in (work / "corpus").rglob("*") if p.is_file())
        yield server


def test_smoke_sweep_trains_from_s3_each_node_copying_it_once(s3, tmp_path):
    node_cache, driver_cache = tmp_path / "node-cache", tmp_path / "driver-cache"
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port, ray_log = free_port(), tmp_path / "ray.log"
    node_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no credentials of its own
    head = subprocess.Popen(
        ray_head_command(port, "--num-cpus", "2"),
        cwd=tmp_path,
        env={**node_env, **auth, "SEPRAY_CACHE": str(node_cache)},
        stdout=ray_log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: "Ray runtime started" in ray_log.read_text(), "ray head", ray_log)
        env = {**s3.env(), **auth, "SEPRAY_CACHE": str(driver_cache)}
        proc = driver(
            tmp_path,
            env,
            "--address",
            f"127.0.0.1:{port}",
            f"--set=data.path={s3.uri}",
            "--set=search.num_samples=2",
            "--set=search.max_concurrent=2",  # two trials start together on the node
        )
    finally:
        stop_group(head)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert f"data: {s3.uri}: {s3.files} files" in proc.stdout  # the driver's check, before Ray

    # one copy on the driver's machine (its test stage) and one on the trials' node, each complete
    for cache in (driver_cache, node_cache):
        (copy,) = remote.copies_of(s3.uri, cache)
        assert remote.is_complete(copy)
    assert list((node_cache / "audio").rglob("*.npy")), "the trials did not decode the node's copy"
    # every object fetched twice (driver + node): the node's two trials shared one copy
    gets = Counter(s3.object_gets())
    assert len(gets) == s3.files and set(gets.values()) == {2}, gets

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = next(r for r in tracking.find_runs(NAME, uri=uri) if r.data.tags.get("sepray.kind") == "sweep")
    assert parent.info.status == "FINISHED"
    children = tracking.child_runs(NAME, parent.info.run_id, uri, kind="trial")
    assert len(children) == 2 and all(c.data.params["data.path"] == s3.uri for c in children)
    best = parent.data.tags["sepray.best_run_id"]
    assert tracking.load_run_config(best, uri)["data"]["path"] == s3.uri  # the package's provenance


def test_sweep_on_a_missing_bucket_is_one_line_before_anything_starts(s3, tmp_path):
    proc = driver(tmp_path, s3.env(), "--set=data.path=s3://no-such-bucket/corpora/synthetic")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == ["sepray: error: s3://no-such-bucket/corpora/synthetic: no such bucket (no-such-bucket)"]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()
