"""The cluster topology on one machine: a real `ray start --head` (token authentication on, as Ray 2.60 sets
it up for a head that has a token) and a real `mlflow server` with proxied artifacts listening on every
interface, as cluster.yaml runs them; `sweeps/run.py --address HOST:PORT` joins that cluster, every trial logs
through the server by the node's address, and `sepray separate` reads the winner back through it."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepray import tracking
from tests.procs import stop_group

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "sweeps" / "quickstart.yaml"
NAME = "quickstart-smoke"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not come up in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    mlflow_log, ray_log = work / "mlflow.log", work / "ray.log"
    port = free_port()
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        cwd=work,
        env={**os.environ, **auth},
        stdout=ray_log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = None
    try:
        wait_for(lambda: "Ray runtime started" in ray_log.read_text(), "ray head", ray_log)
        node_ip = re.search(r"Local node IP: (\S+)", ray_log.read_text()).group(1)
        mlflow_port = free_port()
        hosts = ",".join(f"{h}:{mlflow_port}" for h in ("127.0.0.1", "localhost", node_ip))
        server = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{work / 'server.db'}",
                "--artifacts-destination",
                str(work / "artifacts"),
                "--host",
                "0.0.0.0",  # as on a cluster head: trials on other nodes reach it by the node's address
                "--port",
                str(mlflow_port),
                "--allowed-hosts",
                hosts,
                "--workers",
                "1",
            ],
            cwd=work,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=mlflow_log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{mlflow_port}"
        wait_for(lambda: _healthy(url), "mlflow server", mlflow_log)
        yield {
            "work": work,
            "url": url,
            "trial_url": f"http://{node_ip}:{mlflow_port}",
            "address": f"127.0.0.1:{port}",
            "auth": auth,
        }
    finally:
        stop_group(head)
        if server is not None:
            stop_group(server)


def run_driver(cluster, *args: str, auth: bool = True, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": cluster["url"], "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_AUTH_MODE", None)
    if auth:
        env.update(cluster["auth"])
    return subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "run.py"), str(SPEC), "--smoke-test", *args],
        cwd=cluster["work"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sweep_joins_the_cluster_and_logs_through_the_tracking_server(cluster, tmp_path):
    proc = run_driver(cluster, "--address", cluster["address"])
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "Connecting to existing Ray cluster" in proc.stderr + proc.stdout  # joined, did not start its own
    # the driver's loopback URI would be each node's own loopback: trials log by this node's address instead
    # (the server accepts that Host header only because the fixture allowed it, so the trials really used it)
    assert f"trials log to {cluster['trial_url']} so that other nodes reach it" in proc.stdout
    uri = cluster["url"]
    runs = tracking.find_runs(NAME, uri=uri)
    parents = [r for r in runs if r.data.tags.get("sepray.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = tracking.child_runs(NAME, parents[0].info.run_id, uri)
    assert len(children) >= 2 and len(runs) == len(children) + 1
    best = parents[0].data.tags["sepray.best_run_id"]
    assert best in {c.info.run_id for c in children}
    # the trials' packages went through the server into its artifact destination, not a local path
    assert list((cluster["work"] / "artifacts").rglob("model/config.json"))
    assert not (cluster["work"] / "mlartifacts").exists() and not (cluster["work"] / "mlflow.db").exists()

    song = tmp_path / "song.wav"
    sf.write(song, 0.1 * np.random.default_rng(0).standard_normal((8000 * 3, 2)), 8000)
    out = tmp_path / "separated"
    sep = subprocess.run(
        [str(BIN / "sepray"), "separate", "--run-id", best, str(song), "-o", str(out)],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sep.returncode == 0, sep.stderr[-3000:]
    for source in ("vocals", "accompaniment"):
        info = sf.info(out / "song" / f"{source}.wav")
        assert (info.frames, info.channels, info.samplerate) == (8000 * 3, 2, 8000)


def test_joining_a_token_cluster_without_the_token_is_one_line_with_the_remedy(cluster):
    proc = run_driver(cluster, "--address", cluster["address"], auth=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sepray: error: cannot start or join the Ray cluster at {cluster['address']}")
    assert "RAY_AUTH_MODE=token" in last
